"""What the tests of the API-key proxy in front of Ray Serve share."""

#: A project-shaped key (automation/secrets.api_key_for: "llme-" + 48 hex digits).
PROJECT_KEY = "llme-" + "0123456789abcdef" * 3
