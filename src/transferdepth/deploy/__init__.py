"""Deployment: a checkpoint as a file another engine runs, and those engines.

    export.py           ONNX / TorchScript export of the one inference path (`MetricDepth`), fp32 / fp16
    quantize.py         int8: calibration sets, QDQ quantisation settings, `quantize_onnx`
    bias_correction.py  empirical bias correction of a quantised graph against the float one
    onnx_engine.py      `OnnxRunner`: onnxruntime on an exported graph, checked against our metadata
    openvino_engine.py  `OpenVinoRunner`: OpenVINO (fp32 / bf16) on our IR or ONNX export
    compile_engine.py   `CompiledRunner`: torch.compile (inductor, frozen weights) of the inference path
    engines.py          the engine registry (torch | compile | onnx | openvino | auto), install checks,
                        `auto`'s measured choice and its cache

May import: inference (the one inference path, checkpoints, image reading), models, data (calibration
sets) and the root conventions. The API (`api/`) builds its ONNX estimator on `OnnxRunner`.
"""
