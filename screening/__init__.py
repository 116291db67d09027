"""Request screening as a library: records, preprocessing, features, models, scoring.

`screening` imports neither `gateway` nor aiohttp; the gateway's screening policy uses it, never
the reverse. The serving path (`record`, `leaves`, `preprocess`, `features`, `manifest`, `registry`,
`inference`) needs numpy and onnxruntime only; training and evaluation (`dataset`, `train`,
`evaluate`, `export`) add scikit-learn, skl2onnx and matplotlib (the `train` extra).
"""
