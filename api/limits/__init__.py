"""Rate limits and quotas per API key and per tenant (docs/operations.md, "Rate limits and quotas")."""

from api.limits.buckets import LimitStore, MemoryStore, Quota, RedisStore
from api.limits.quotas import Limits

__all__ = ["LimitStore", "Limits", "MemoryStore", "Quota", "RedisStore"]
