"""What every `api` route shares: one OpenAI-compatible HTTP client (`chat`) and what keeps a busy server from
being made busier (`resilience`). Neither knows about toxcmp's requests or responses."""
