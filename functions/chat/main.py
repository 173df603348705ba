"""Chat function entry point: the FastAPI app, served by uvicorn behind the Lambda Web Adapter."""

from chatcore.api.app import create_app

app = create_app()
