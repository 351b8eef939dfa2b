"""The programs the operator runs in pods (`python -m rft.pods.<name>`; rft.contracts.entrypoints
names each): `validate` (a Dataset's validation Job), `check_model` (a base Model's check Job),
`fetch` (server pods' model fetch), `adapter_sidecar` (server pods' adapter loader), `admin_guard`
(vLLM's admin middleware). Each reports through its contract in rft.contracts.
"""
