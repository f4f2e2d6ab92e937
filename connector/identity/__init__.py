"""Data-space identity: the authority, participant certificates, DATs and transfer tokens.

Modules:
    keys       key generation/loading (Ed25519, ECDSA P-256 only), JWKs, RFC 7638 thumbprints
    ca         the data-space CA, CSR signing, `SKI:keyid:AKI` participant ids
    jose       fail-closed JWS/JWT steps shared by every token type
    tokens     `Claims`, the DAT payload, provider-signed transfer tokens (+ refresh)
    verify     the `Verifier` seam (`verify(token) -> Claims`), DAT and transfer verifiers,
               JWKS cache, revocation polling, replay and verified-token caches
    client     participant identity files and the single-flight DAT client
    store      the authority directory (atomic JSON/PEM files, reload on change)
    registry   operator actions: register, revoke, rotate keys, attributes, groups
    participants  attested facts beyond keys (jurisdiction, groups, certifications) and the
               participant IRI form (`urn:participant:<id>`)
    authority  the authority service (aiohttp): /token, JWKS, metadata, admin API
    cli        `connector authority ...` and `connector init`
"""
