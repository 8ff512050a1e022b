"""A Flask app.

    pip install flask
    clusterserve examples.flask_app:app -w 4 --threads 4

Flask apps are WSGI: each worker runs requests on ``--threads`` app threads,
while its event loop keeps idle keep-alive connections off them.
"""

import os

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/")
def index():
    return jsonify(message="Hello from Flask!", worker=os.getpid())


@app.post("/echo")
def echo():
    # wsgi.input: the body is read as the app asks for it (chunked works too).
    return jsonify(received=request.get_data(as_text=True), scheme=request.scheme)


@app.get("/healthz")
def healthz():
    # Cheap and independent of databases: for Docker and Kubernetes probes.
    return "ok\n", 200, {"Content-Type": "text/plain"}
