"""The operator's side: request statistics, the control socket and ``clusterserve ctl``,
Prometheus metrics and statsd."""
