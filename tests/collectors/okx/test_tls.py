"""Every HTTP client of the process verifies certificates with one shared TLS context."""

import asyncio
import ssl

import httpx

from collectors.okx.rest import OkxRestClient
from collectors.okx.tls import tls_context


def _context_of(client: httpx.AsyncClient | httpx.Client) -> ssl.SSLContext:
    return client._transport._pool._ssl_context


def test_the_context_is_built_once_and_verifies_certificates_and_host_names():
    context = tls_context()
    assert tls_context() is context
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0  # certifi's bundle is loaded


def test_rest_clients_share_the_context_instead_of_loading_the_bundle_each():
    async def contexts() -> list[ssl.SSLContext]:
        clients = [OkxRestClient("https://www.okx.com"), OkxRestClient("https://www.okx.com")]
        try:
            return [_context_of(client._client()) for client in clients]
        finally:
            for client in clients:
                await client.aclose()

    assert all(context is tls_context() for context in asyncio.run(contexts()))
