"""`transferdepth serve`: a trained network behind HTTP (FastAPI + uvicorn, the optional `[serve]` extra).

    engine.py   TorchEngine (DepthEstimator) and OnnxEngine (onnxruntime): uint8 RGB -> metres
    app.py      create_app(engine, settings): the /v1 API, limits, the queue, errors, the page at /
    static/     the page (HTML, JS, CSS; no external network)
"""
