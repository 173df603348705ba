"""The HTTP surface of the chat function (FastAPI under uvicorn, behind the Lambda Web Adapter)."""
