"""Does an artifact compute what the PyTorch model computes: parity, metrics and tolerances, localisation of the
first diverging op, and the verification of every fresh build (`verify_build`, `build_verified`)."""
