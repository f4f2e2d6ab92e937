"""aiohttp edges: DSP routes, management API, outbound client, auth and error middleware."""
