"""The load benchmark: stepup beside a hello-world ceiling and an oidc-provider peer, driven by
wrk on loopback. `python -m benchmarks` (or `./dev bench`) runs it; see the README."""
