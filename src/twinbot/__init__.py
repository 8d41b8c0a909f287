"""twinbot: turn your own chat history into a chat model that talks like you."""

__version__ = "0.1.0"
