"""Hooks as webhooks: a tenant's HTTP endpoints answer the agent's hook events.

`registry` registers and deletes them (with audit), `ssrf` decides which addresses may be called,
`signing` signs each call Stripe-style, `dispatcher` calls them and turns answers into hook outputs.
"""
