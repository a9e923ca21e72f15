"""Who is asking and how much they may ask: tenants, API keys, JWT, rate limits, admission
control and signed webhooks (docs: the module docstrings below)."""
