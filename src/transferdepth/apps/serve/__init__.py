"""`transferdepth serve`: a trained network behind HTTP (FastAPI + uvicorn, the optional `[serve]` extra).

    app.py      create_app(engine, settings): wires the parts below into a FastAPI app; serve_in_thread
    routes.py   the endpoints: /v1/depth (read, decode, predict on one worker thread, encode), /v1/model, ...
    limits.py   Settings; the API key and body-size guard (ASGI middleware); the admission queue (503)
    errors.py   ApiError and the handlers that make every error one line of JSON
    engine.py   TorchEngine (DepthEstimator) and OnnxEngine (onnxruntime): uint8 RGB -> metres
    static/     the page (HTML, JS, CSS; no external network)
"""
