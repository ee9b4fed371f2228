"""HTTP routers of the leads domain for API keys (one module per noun; leads.domain declares them)."""
