"""The pieces of :class:`~components.model_storage.ModelStorage`: downloader, S3 policies."""
