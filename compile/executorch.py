"""ExecuTorch target: a ``model.pte`` program lowered with the XNNPACK partitioner from ``torch.export``.

Steps: the target's exact module rewrites (`vcompile.compile.rewrites`: XNNPACK has no 3-D convolution or pooling,
so those become 2-D operators) -> ``torch.export`` at a static input shape (the build batch is baked in) -> graph
rewrites that keep the program inside XNNPACK (`GRAPH_REWRITES`: attention as bmm + softmax, layer norm as means,
split as slices before the Edge dialect; then an Edge pass for means over a clip, broadcasts, selects, squeezes,
zero-padded average pools) -> Edge dialect and XNNPACK partitioning -> ``.pte``. What XNNPACK does not take runs on
ExecuTorch's portable kernels; the manifest lists it, with the share of the model's FLOPs (convolutions, matrix
products, attention) that runs in XNNPACK.

int8 programs go the same way with post-training quantization between the rewrites and the lowering: the rewritten
module (its 3-D convolutions already 2-D ones, which XNNPACK can quantize and a direct lowering could not) is
exported, annotated by ExecuTorch's XNNPACK quantizer (symmetric int8, weights per channel, activations per
tensor), calibrated on the build's calibration clips (PT2E ``prepare_pt2e``/``convert_pt2e``), exported again and
lowered; XNNPACK then runs the quantized convolutions and linear layers in int8. When the quantized reference
module fails the accuracy gate in PyTorch, the modules whose input activations lose most to quantization stay float
(`int8_sensitivity`, `_accuracy_aware_int8`); only the module that passes, or the last one tried, is lowered.
"""

from __future__ import annotations

import math
from collections import Counter
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import MAX_FLOAT_SHARE, BuildContext, Target, TargetResult, float_counts, module_path
from .rewrites import apply_rewrites

__all__ = ["MODEL_FILE", "GRAPH_REWRITES", "exported_program_from_module", "edge_program_from_exported",
           "delegation_summary", "pte_from_edge_program", "quantized_program", "build", "TARGET"]

MODEL_FILE = "model.pte"
GRAPH_REWRITES = ("sdpa_as_bmm", "layer_norm_as_means", "split_as_slices", "xnnpack_compat")
_DELEGATE_CALL = "executorch_call_delegate"


def exported_program_from_module(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` of the module at the example's (static) shape."""
    with torch.no_grad():
        return torch.export.export(model, (example,))


def _sdpa_as_bmm(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """Attention as two batched matrix products around a softmax (XNNPACK's bmm and softmax); an additive float
    mask is added to the scores.

    Without it, the Edge dialect gets PyTorch's math decomposition, whose masking of fully masked rows (``any``,
    ``where``, ``logical_not`` over the attention matrix) runs on portable kernels and splits the delegate. The one
    difference: a row whose mask is -inf everywhere gives NaN here and zeros there (no zoo model has one).
    """
    if is_causal or dropout_p or enable_gqa or query.dim() < 3 or \
            (attn_mask is not None and not attn_mask.is_floating_point()):
        return NotImplemented
    *batch, length, width = query.shape
    n, keys, width_v = math.prod(batch), key.shape[-2], value.shape[-1]
    q = query.reshape(n, length, width) * (scale if scale is not None else 1 / math.sqrt(width))
    scores = torch.bmm(q, key.reshape(n, keys, width).transpose(1, 2))
    if attn_mask is not None:
        scores = (scores.reshape(*batch, length, keys) + attn_mask).reshape(n, length, keys)
    return torch.bmm(scores.softmax(-1), value.reshape(n, keys, width_v)).reshape(*batch, length, width_v)


def _layer_norm_as_means(input, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    """LayerNorm over the last dimension with means of a (N, 1, 1, C) view (XNNPACK has no layer norm)."""
    if len(normalized_shape) != 1:
        return NotImplemented
    shape, width = input.shape, input.shape[-1]
    x = input.reshape(-1, 1, 1, width)
    centred = x - x.mean((2, 3), keepdim=True)
    var = (centred * centred).mean((2, 3), keepdim=True)
    out = (centred * torch.rsqrt(var + eps)).reshape(shape)
    out = out * weight if weight is not None else out
    return out + bias if bias is not None else out


def _split_as_slices(input, split_sizes, dim=0):
    """``split`` and ``split_with_sizes`` as slices (XNNPACK slices; it has no split)."""
    size = input.shape[dim]
    if isinstance(split_sizes, int):
        split_sizes = [min(split_sizes, size - start) for start in range(0, size, split_sizes)]
    starts = [sum(split_sizes[:i]) for i in range(len(split_sizes))]
    return [input.narrow(dim, start, length) for start, length in zip(starts, split_sizes)]


def _decompositions() -> dict:
    aten = torch.ops.aten
    return {aten.scaled_dot_product_attention.default: _sdpa_as_bmm, aten.layer_norm.default: _layer_norm_as_means,
            aten.split.Tensor: _split_as_slices, aten.split_with_sizes.default: _split_as_slices}


def _xnnpack_compat_pass():
    """An Edge-dialect pass that rewrites, exactly, ops XNNPACK rejects into ops it takes.

    - ``mean(x, (2, 3, 4))`` of a clip: the mean of its (B, C, T*H, W) view (XNNPACK's global average pooling);
    - ``full_like(x, v)``: ``full(shape, v)``, which needs no input, so it no longer splits the delegate;
    - ``avg_pool2d`` counting padding: explicit zero padding, then an unpadded pool;
    - ``select(x, d, i)``: a slice and a view; ``squeeze`` and ``unsqueeze``: views;
    - ``expand`` (broadcast): a product with ones (XNNPACK has no broadcast copy; ``x * 1`` is exact).
    """
    from executorch.exir.dialects._ops import ops as exir_ops
    from executorch.exir.pass_base import ExportPass

    ops = exir_ops.edge.aten
    view = ops.view_copy.default

    class XnnpackCompat(ExportPass):
        def _mean_as_4d(self, x, shape, dims, keep, meta):
            """Reduced dimensions moved last and viewed as (N, C, reduced, 1), C the last kept dimension: XNNPACK's
            global average pooling."""
            call = super().call_operator
            kept = [d for d in range(len(shape)) if d not in dims]
            if kept + dims != list(range(len(shape))):
                x = call(ops.permute_copy.default, (x, kept + dims), {}, meta)
            lead = [shape[d] for d in kept] or [1]
            flat = [math.prod(lead[:-1]), lead[-1], math.prod(shape[d] for d in dims), 1]
            pooled = call(ops.mean.dim, (call(view, (x, flat), {}, meta), [2, 3], True), {}, meta)
            out = [1 if d in dims else n for d, n in enumerate(shape)] if keep else [shape[d] for d in kept]
            return call(view, (pooled, out), {}, meta)

        def call_operator(self, op, args, kwargs, meta):
            call = super().call_operator
            if op in (ops.mean.dim, ops.full_like.default, ops.avg_pool2d.default, ops.select_copy.int,
                      ops.squeeze_copy.dims, ops.squeeze_copy.dim, ops.unsqueeze_copy.default, ops.expand_copy.default):
                shape = list(args[0].to_tensor().shape)
                if op is ops.mean.dim and kwargs.get("dtype") is None:
                    rank, keep = len(shape), len(args) > 2 and bool(args[2])
                    dims = sorted({d % rank for d in args[1]}) if args[1] else list(range(rank))
                    if not (rank == 4 and dims == [2, 3] and keep):
                        return self._mean_as_4d(args[0], shape, dims, keep, meta)
                if op is ops.full_like.default and kwargs.get("memory_format") in (None, torch.preserve_format):
                    dtype = kwargs.get("dtype") or args[0].to_tensor().dtype
                    return call(ops.full.default, (shape, args[1]), {"dtype": dtype}, meta)
                if op is ops.avg_pool2d.default:
                    defaults = (None, None, [], [0, 0], False, True, None)  # x, kernel, stride, padding, ceil, ...
                    _, kernel, stride, padding, ceil, count_pad, divisor = (*args, *defaults[len(args):])
                    if count_pad and any(padding) and not ceil and divisor is None:
                        ph, pw = (padding * 2)[:2]
                        padded = call(ops.constant_pad_nd.default, (args[0], [pw, pw, ph, ph], 0.0), {}, meta)
                        return call(op, (padded, kernel, stride or kernel, [0, 0], False, True), {}, meta)
                if op is ops.select_copy.int:
                    dim, index = args[1] % len(shape), args[2] % shape[args[1]]
                    sliced = call(ops.slice_copy.Tensor, (args[0], dim, index, index + 1, 1), {}, meta)
                    return call(view, (sliced, shape[:dim] + shape[dim + 1:]), {}, meta)
                if op is ops.unsqueeze_copy.default:
                    dim = args[1] % (len(shape) + 1)
                    return call(view, (args[0], shape[:dim] + [1] + shape[dim:]), {}, meta)
                if op is ops.expand_copy.default:
                    sizes = list(args[1])
                    out = [shape[i - len(sizes) + len(shape)] if n == -1 else n for i, n in enumerate(sizes)]
                    if out == shape:
                        return call(view, (args[0], out), {}, meta)
                    ones = call(ops.full.default, (out, 1.0), {"dtype": args[0].to_tensor().dtype}, meta)
                    return call(ops.mul.Tensor, (args[0], ones), {}, meta)
                if op in (ops.squeeze_copy.dims, ops.squeeze_copy.dim):
                    dims = {d % len(shape) for d in (args[1] if isinstance(args[1], (list, tuple)) else [args[1]])}
                    return call(view, (args[0], [n for i, n in enumerate(shape) if i not in dims or n != 1]), {},
                                meta)
            return call(op, args, kwargs, meta)

    return XnnpackCompat()


def edge_program_from_exported(program: torch.export.ExportedProgram):
    """Attention and layer norm decomposed for XNNPACK, Edge dialect, the compat pass, XNNPACK lowering."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = program.run_decompositions(_decompositions())
    return to_edge_transform_and_lower(program, transform_passes=[_xnnpack_compat_pass()],
                                       partitioner=[XnnpackPartitioner()])


def _op_name(node: torch.fx.Node) -> str:
    name = getattr(node.target, "__name__", str(node.target))
    return name.removeprefix("aten.")


def _shape(node: Any) -> tuple[int, ...]:
    val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return tuple(val.shape) if isinstance(val, torch.Tensor) else ()


def _node_flops(node: torch.fx.Node) -> int:
    """FLOPs (2 per multiply-accumulate) of a convolution, matrix product or attention node; 0 for other ops."""
    name = _op_name(node).split(".")[0]
    out = _shape(node)
    if not out:
        return 0
    if name == "convolution":
        weight = _shape(node.args[1])
        return 2 * math.prod(out) * math.prod(weight[1:]) if weight else 0
    if name in ("mm", "bmm", "linear", "addmm"):
        lhs = _shape(node.args[1] if name == "addmm" else node.args[0])
        return 2 * math.prod(out) * lhs[-1] if lhs else 0
    if "scaled_dot_product" in name:
        q, k, v = (_shape(a) for a in node.args[:3])
        return 2 * math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1]) if q and k and v else 0
    return 0


def delegation_summary(edge_program, top: int = 25) -> dict[str, Any]:
    """What XNNPACK took and what it left to the portable kernels, from the lowered Edge program's graph.

    ``explain`` lists the operators left to the portable kernels, grouped by PyTorch module and op, largest FLOP
    share first (at most ``top`` rows; its ``rows_omitted`` counts the rest). FLOPs count convolutions,
    matrix products and attention at 2 per multiply-accumulate, the convention of the zoo's GFLOPs; element-wise
    ops count 0, so a share of 0 means the op moves memory but does little arithmetic.
    """
    graph_module = edge_program.exported_program().graph_module
    delegated, portable = Counter(), Counter()
    flops = {"delegated": 0, "portable": 0}
    by_module: dict[tuple[str, str], list[int]] = {}
    subgraphs = 0
    for node in graph_module.graph.nodes:
        if node.op == "get_attr" and node.name.startswith("lowered_module"):
            subgraphs += 1
            for inner in getattr(graph_module, node.target).original_module.graph.nodes:
                if inner.op == "call_function" and inner.target.__module__ != "_operator":
                    delegated[_op_name(inner)] += 1
                    flops["delegated"] += _node_flops(inner)
        elif node.op == "call_function" and _DELEGATE_CALL not in _op_name(node) and \
                getattr(node.target, "__module__", "") != "_operator":  # getitem unpacks outputs
            op, cost = _op_name(node), _node_flops(node)
            portable[op] += 1
            flops["portable"] += cost
            row = by_module.setdefault((module_path(node) or "(model)", op), [0, 0])
            row[0], row[1] = row[0] + 1, row[1] + cost
    total = flops["delegated"] + flops["portable"]
    share = round(flops["delegated"] / total, 6) if total else None
    rows = sorted(({"module": module, "op": op, "count": count, "gflops": round(cost / 1e9, 4),
                    "flops_share": round(cost / total, 6) if total else 0.0}
                   for (module, op), (count, cost) in by_module.items()),
                  key=lambda r: (-r["gflops"], -r["count"], r["module"], r["op"]))
    return {
        "delegate": "XnnpackBackend", "delegated_subgraphs": subgraphs,
        "delegated_ops": sum(delegated.values()), "non_delegated_ops": sum(portable.values()),
        "non_delegated": dict(portable.most_common()), "delegated_by_op": dict(delegated.most_common()),
        "gflops_2_per_mac": round(total / 1e9, 4),
        "delegated_flops_share": share,
        "explain": {"accelerator": "XNNPACK", "accelerated_share": share, "gflops": round(total / 1e9, 4),
                    "not_accelerated": rows[:top],
                    "rows_omitted": max(0, len(rows) - top),
                    "note": "ops outside the XNNPACK delegate run on ExecuTorch's portable kernels"},
    }


def pte_from_edge_program(edge_program, path: Path) -> int:
    """Serialise the ExecuTorch program to ``path``; returns its size in bytes."""
    program = edge_program.to_executorch()
    path.write_bytes(program.buffer)
    return path.stat().st_size


PADS = (torch.ops.aten.pad.default, torch.ops.aten.constant_pad_nd.default)


def quantized_program(model: nn.Module, example: torch.Tensor, clips: list[torch.Tensor],
                      keep_float: tuple[str, ...] = ()):
    """The PT2E int8 program of ``model`` for XNNPACK, calibrated on ``clips`` (each repeated to the static batch),
    with the modules named in ``keep_float`` left float. Returns the exported program, the quantized reference
    module it was exported from (for `int8_sensitivity` and a gate in PyTorch), and the quantizer's settings."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    class PadSharingQuantizer(XNNPACKQuantizer):
        """XNNPACK's quantizer, with zero padding sharing its input's quantization: XNNPACK pads an int8 tensor only
        when input and output have the same scale and zero point (the rewrites' temporal padding otherwise fails
        to load, 'Failed to create StaticConstantPad'). Exact: the pad value 0 is the zero point."""

        def annotate(self, model):
            model = super().annotate(model)
            for node in model.graph.nodes:
                if node.target not in PADS or node.meta.get(Q_ANNOTATION_KEY) is not None:
                    continue
                source = node.args[0]
                annotation = source.meta.get(Q_ANNOTATION_KEY) if isinstance(source, torch.fx.Node) else None
                if annotation is None or annotation.output_qspec is None:
                    continue  # a float input stays float
                shared = SharedQuantizationSpec(source)
                node.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(
                    input_qspec_map={source: shared}, output_qspec=shared, _annotated=True)
            return model

    quantizer = PadSharingQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    if keep_float:
        skipped = set(keep_float)
        quantizer.set_filter_function(lambda node: module_path(node) not in skipped)
    with torch.no_grad():
        prepared = prepare_pt2e(torch.export.export(model, (example,)).module(), quantizer)
        for clip in clips:
            prepared(clip.expand(example.shape[0], *clip.shape[1:]).contiguous())
        converted = convert_pt2e(prepared)
        program = torch.export.export(converted, (example,))
    settings = {"quantizer": "executorch XNNPACKQuantizer (PT2E)", "weights": "int8 per channel, symmetric",
                "activations": "int8 per tensor", "kept_float": list(keep_float), **_quantized_weights(program)}
    return program, converted, settings


def int8_sensitivity(converted: torch.fx.GraphModule, clip: torch.Tensor) -> dict[str, float]:
    """How much quantizing its input activation costs each convolution and linear layer of a quantized reference
    module, as a signal-to-quantization-noise ratio in dB (lower is worse), by module path: the tensor before its
    quantize and after its dequantize, in one run on ``clip``. Local noise, as onnxruntime's ``qdq_loss_debug``
    measures it, so a layer is not blamed for the error of the layers before it; weights (int8 per channel) are
    rarely what fails a gate and are not ranked."""
    quantize = {torch.ops.quantized_decomposed.quantize_per_tensor.default}
    watched = {}  # quantize node -> module path of the weighted op its dequantized output feeds
    for node in converted.graph.nodes:
        kind = _op_name(node) if node.op == "call_function" else ""
        if ("conv" in kind or "linear" in kind) and node.args and isinstance(node.args[0], torch.fx.Node):
            dequantized = node.args[0]
            source = dequantized.args[0] if dequantized.op == "call_function" and dequantized.args else None
            if isinstance(source, torch.fx.Node) and source.target in quantize and module_path(node):
                watched[source] = (dequantized, module_path(node))
    pending, ratios = {}, {}

    class Probe(torch.fx.Interpreter):
        def run_node(self, node):
            result = super().run_node(node)
            if node in watched:  # keep the float input of this quantize until its dequantize has run
                pending[watched[node][0]] = (self.env[node.args[0]] if isinstance(node.args[0], torch.fx.Node)
                                             else node.args[0], watched[node][1])
            elif node in pending:
                before, path = pending.pop(node)
                noise = float(((before.float() - result.float()) ** 2).sum())
                signal = float((before.float() ** 2).sum())
                db = 10 * math.log10(signal / noise) if noise > 0 and signal > 0 else float("inf")
                ratios[path] = min(ratios.get(path, float("inf")), db)
            return result

    with torch.no_grad():
        Probe(converted).run(clip)
    return ratios


def _quantized_weights(program) -> dict[str, dict[str, int]]:
    """Per kind of weighted op (conv, linear), how many there are and how many read an int8 weight."""
    counts: dict[str, dict[str, int]] = {}
    for node in program.graph.nodes:
        name = _op_name(node) if node.op == "call_function" else ""
        kind = "conv" if "conv" in name else "linear" if "linear" in name else None
        if kind is None or len(node.args) < 2 or not isinstance(node.args[1], torch.fx.Node):
            continue
        entry = counts.setdefault(kind, {"ops": 0, "int8_weights": 0})
        entry["ops"] += 1
        weight = node.args[1]
        entry["int8_weights"] += weight.op == "call_function" and "dequantize_per_channel" in str(weight.target)
    return {"weighted_ops": counts}


def _accuracy_aware_int8(ctx: BuildContext, model: nn.Module):
    """The int8 program of the rewritten ``model``; when its quantized reference fails the gate in PyTorch
    (`BuildContext.judge`), the modules whose input activations lose most to quantization stay float, a doubling
    number at a time (`float_counts`), until it passes or `MAX_FLOAT_SHARE` of them is float. The lowered
    program is then verified as every artifact is; the manifest names each attempt and what stayed float."""
    clips = ctx.calibration()
    with ctx.stage("quantize"):
        program, converted, quantization = quantized_program(model, ctx.example, clips)
    if ctx.judge is None:
        return program, quantization

    def judged(module) -> dict:
        with torch.no_grad():
            return ctx.judge([module(x) for x in ctx.check_inputs])

    gate = judged(converted)
    attempts = [{"kept_float": 0, "status": gate["status"], "cosine": gate.get("cosine")}]
    if gate["status"] == "fail":
        example = clips[0].expand(ctx.example.shape[0], *clips[0].shape[1:]).contiguous()
        with ctx.stage("sensitivity"):
            ratios = int8_sensitivity(converted, example)
        ranked = sorted(ratios, key=ratios.get)  # the lowest signal-to-noise ratio first
        for count in float_counts(len(ranked)):
            with ctx.stage(f"quantize, {count} float"):
                program, converted, quantization = quantized_program(model, ctx.example, clips, tuple(ranked[:count]))
            gate = judged(converted)
            attempts.append({"kept_float": count, "status": gate["status"], "cosine": gate.get("cosine")})
            if gate["status"] != "fail":
                break
        quantization["snr_db"] = {path: round(ratios[path], 2) for path in ranked}  # the whole ranking
    quantization["accuracy_aware"] = {"judged": "quantized reference module in PyTorch, on the gate's clips",
                                      "attempts": attempts, "max_float_share": MAX_FLOAT_SHARE,
                                      "quantized_modules": len(_weighted_modules(converted))}
    return program, quantization


def _weighted_modules(graph_module: torch.fx.GraphModule) -> set[str]:
    """Module paths of the convolutions and linear layers of a graph."""
    return {module_path(n) for n in graph_module.graph.nodes if n.op == "call_function"
            and ("conv" in _op_name(n) or "linear" in _op_name(n)) and module_path(n)}


def build(ctx: BuildContext) -> TargetResult:
    """Rewrite, export (quantize, for int8), lower to XNNPACK and write ``model.pte`` (`vcompile.compile.build`
    then verifies it)."""
    with ctx.stage("rewrite"):
        model, rewrites = apply_rewrites(ctx.model, "executorch", ctx.example)
    quantization = None
    if ctx.options.precision == "int8":
        program, quantization = _accuracy_aware_int8(ctx, model)
    else:
        with ctx.stage("export"):
            program = exported_program_from_module(model, ctx.example)
    with ctx.stage("lower"):
        edge = edge_program_from_exported(program)
        summary = delegation_summary(edge)
    if quantization is not None:
        summary["explain"]["int8_weights"] = quantization["weighted_ops"]
    ctx.explain(summary["explain"])  # before serializing, for --explain
    with ctx.stage("serialize"):
        size = pte_from_edge_program(edge, ctx.out_dir / MODEL_FILE)
    info = {"exporter": "torch.export", "backend": "xnnpack", "static_batch": ctx.options.batch,
            "rewrites": rewrites, "graph_rewrites": list(GRAPH_REWRITES), **summary, "pte_bytes": size}
    if quantization is not None:
        info["quantization"] = quantization
    return TargetResult(files={"model": MODEL_FILE}, info=info)


def versions() -> dict[str, str]:
    return {"executorch": version("executorch")}


TARGET = Target(
    name="executorch",
    build=build,
    versions=versions,
    runtime="executorch",
    requires=("executorch",),
    extra="mobile",
    precisions=("fp32", "int8"),
)
