"""What both partition services build on: hosting one side of a cut behind FastAPI."""
