"""`make drills`: Serve's data plane (HAProxy or Ray's proxy) under faults and scaling on
a local multi-node cluster, counting every answer that is not a 200."""
