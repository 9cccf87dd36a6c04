"""What the records say: analysis (relative latency, memory, speedups), plots, documents (markdown, CSV, HTML)
and the paper's published figures to compare against."""
