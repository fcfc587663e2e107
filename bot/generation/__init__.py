"""From a member's request to posted images: jobs, the service, the runner, uploads."""
