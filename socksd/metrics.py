"""
The names C{socksd.metrics} had, for code that imports them from here.

socksd's Prometheus metrics now live in L{socksd.service.metrics}, with the
rest of the service; new code imports from there.
"""

from socksd.service.metrics import Metrics, metricsService, metricsSite, refusalKind

__all__ = ["Metrics", "metricsService", "metricsSite", "refusalKind"]
