"""Pulumi program: one model endpoint, or the shared platform cluster.

Only wiring lives here: the stack's config is validated in one place
(``components.config``) and handed to one builder.
"""

import pulumi

from components.config import load_stack_config
from components.endpoint import build_endpoint, build_platform

config = load_stack_config()
if config.platform is not None:
    outputs = build_platform(config.platform)
else:
    outputs = build_endpoint(
        config.endpoint,
        hf_token=config.hf_token,
        api_key=config.api_key,
        api_key_version=config.api_key_version,
    )

for key, value in outputs.items():
    pulumi.export(key, value)
