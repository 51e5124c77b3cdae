"""`bias_correction.correct_biases`: after it, every corrected convolution's mean output per channel on the
calibration images equals the float graph's (the reference: the same tensors of the float32 graph)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferdepth.deploy.bias_correction import graph_links

pytest.importorskip("onnxruntime.quantization")


def _means(model, names, feeds):
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    for n in names:
        m.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    outs = [sess.run(names, f) for f in feeds]
    return [np.mean([o[k].mean(axis=(0, 2, 3)) for o in outs], axis=0) for k in range(len(names))]


def test_corrected_convolutions_match_the_float_means(tmp_path):
    import onnx
    from onnxruntime.quantization import quant_pre_process

    from transferdepth.deploy.bias_correction import correct_biases
    from transferdepth.deploy.export import (
        DEFAULT_CALIBRATION,
        INPUT_NAME,
        MetricDepth,
        _trace_onnx,
        calibration_batches,
        quantize_onnx,
    )
    from transferdepth.models import create_model

    torch.manual_seed(0)
    model = create_model("mobilenetv2", decoder_width=0.05).eval()
    proto = _trace_onnx(MetricDepth(model).eval(), 17)
    batches = calibration_batches(DEFAULT_CALIBRATION, 4, (64, 96))
    feeds = [{INPUT_NAME: b} for b in batches]
    onnx.save(proto, str(tmp_path / "fp32.onnx"))
    quant_pre_process(str(tmp_path / "fp32.onnx"), str(tmp_path / "pre.onnx"), skip_symbolic_shape=True)
    fp32 = onnx.load(str(tmp_path / "pre.onnx"))  # what quantize_onnx quantises: the same tensor names
    qdq, _ = quantize_onnx(proto, batches, bias_correction=False)

    # each quantised Conv's dequantised output (Conv -> QuantizeLinear -> DequantizeLinear) and its bias scale
    producer, consumers = graph_links(qdq.graph)
    init = {t.name: t for t in qdq.graph.initializer}
    pairs = []
    for conv in qdq.graph.node:
        if conv.op_type == "Conv" and len(conv.input) == 3 and producer.get(conv.input[2]) is not None:
            q = [n for n in consumers[conv.output[0]] if n.op_type == "QuantizeLinear"]
            if q:
                dq = next(n for n in consumers[q[0].output[0]] if n.op_type == "DequantizeLinear")
                scale = onnx.numpy_helper.to_array(init[producer[conv.input[2]].input[1]])
                pairs.append((conv.output[0], dq.output[0], scale))
    assert len(pairs) >= 50  # MobileNetV2 and the decoder, the last conv excluded

    target = _means(fp32, [p[0] for p in pairs], feeds)
    before = _means(qdq, [p[1] for p in pairs], feeds)
    assert correct_biases(qdq, fp32, feeds) == len(pairs)
    after = _means(qdq, [p[1] for p in pairs], feeds)
    err_before = [np.abs(b - t).max() for b, t in zip(before, target)]
    err_after = [np.abs(a - t).max() for a, t in zip(after, target)]
    # measured: median over the convolutions of the largest per-channel error 2.6e-6 before, 1.6e-7 after (the
    # rest: the outputs' own rounding, and layers whose output is clipped, ReLU6 folded into the quantisation)
    assert np.median(err_after) <= 0.2 * np.median(err_before), (np.median(err_before), np.median(err_after))


def test_each_step_runs_only_what_its_tensor_needs():
    """The graph run per step is cut to the tensor's ancestors: same values, far fewer nodes for an early one."""
    import onnx
    import onnxruntime as ort

    from transferdepth.deploy.bias_correction import _subgraph
    from transferdepth.deploy.export import INPUT_NAME, MetricDepth, _trace_onnx
    from transferdepth.models import create_model

    torch.manual_seed(0)
    proto = _trace_onnx(MetricDepth(create_model("mobilenetv2", decoder_width=0.05).eval()).eval(), 17)
    convs = [n.output[0] for n in proto.graph.node if n.op_type == "Conv"]
    x = {INPUT_NAME: np.random.default_rng(0).random((1, 3, 64, 96), dtype=np.float32)}
    full = onnx.ModelProto()
    full.CopyFrom(proto)
    full.graph.output.extend(onnx.helper.make_tensor_value_info(c, onnx.TensorProto.FLOAT, None) for c in convs)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as correct_biases runs it
    want = ort.InferenceSession(full.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(convs, x)
    for k in (3, len(convs) - 1):
        cut = _subgraph(proto, [convs[k]], graph_links(proto.graph)[0])
        got = ort.InferenceSession(cut, so, providers=["CPUExecutionProvider"]).run([convs[k]], x)[0]
        np.testing.assert_array_equal(got, want[k])
        n_cut = len(onnx.load_from_string(cut).graph.node)
        if k == 3:
            assert n_cut < len(proto.graph.node) / 4, (n_cut, len(proto.graph.node))
