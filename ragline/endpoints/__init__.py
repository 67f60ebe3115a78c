"""Clients for the model endpoints, one per model. The transport is SageMaker Runtime in AWS and
HTTP to the local model server locally; the wire format is the same (see sagemaker/*/README.md)."""
