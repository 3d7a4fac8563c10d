"""Pure: the manifests quantwise creates (Job, Deployment, LeaderWorkerSet, Service)."""
