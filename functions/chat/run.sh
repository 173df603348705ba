#!/bin/bash
# Started by the Lambda Web Adapter (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap runs this Handler).
# /opt/python holds the common layer; the Python runtime client is bypassed, so add it by hand.
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}/opt/python:${LAMBDA_TASK_ROOT:-.}"
# uvloop + httptools (both in the layer) take about a quarter off the time to first token the app
# adds (docs/benchmarks.md).
exec python -m uvicorn --host 127.0.0.1 --port "${AWS_LWA_PORT:-${PORT:-8080}}" \
  --loop uvloop --http httptools --no-access-log --timeout-keep-alive 75 main:app
