"""The pieces of :class:`~components.inference_service.InferenceService`.

``pods`` (what every serving pod is made of), ``workloads`` (the three serving
modes), ``exposure`` (Ingress, Open WebUI) and ``scripts`` (vLLM arguments,
the LeaderWorkerSet's Ray scripts, Ray Serve's config).
"""
