"""Web dashboards, server-rendered: the connector's at ``/ui`` on its management port
(connector.ui.dashboard) and the authority's read-only page (connector.ui.authority)."""
