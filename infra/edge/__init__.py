"""Layer 10, the edge: `gateway` (Gateway, TLS, routes, IAP, Cloud Armor) and
`network_policies` (who may reach what inside the cluster), one component each."""
