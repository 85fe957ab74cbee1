"""The edge gateway: the Open Inference Protocol v2 front door that routes to one pipeline."""
