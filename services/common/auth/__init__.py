"""Zero-trust authentication inside the mesh: every service verifies the internal JWT itself.

The edge exchanges the client's external token for a short internal JWT (issuer
`shopmesh-auth`, audience `shopmesh-internal`, the user's `roles`) and sends it upstream in
`Authorization: Bearer`. A service checks it with the keys auth publishes at `/auth/jwks`,
fetched through the service's own sidecar.

- `jwt`: `verify_jwt`, the one implementation of the checks (also used by auth for external
  tokens), and `verify_internal(token, keys)` -> `Principal(sub, roles)` or
  `Unauthenticated(reason)`.
- `verified_tokens`: `VerifiedTokens`, each internal token verified once per process.
- `jwks`: `Jwks`, auth's public keys fetched and cached (`Jwks.for_settings`).
- `principal`: `Principal`, the current caller (`current_principal()`), and authorization:
  `require_role` / `require_self_or_admin` raise services.common.errors.PermissionDenied (a 403
  problem, gRPC PERMISSION_DENIED, like every domain error).
- `middleware`: `auth_middleware(keys)` for aiohttp; the Principal is `request_principal(request)`.
- `interceptor`: `AuthInterceptor(keys)` for grpc.aio; the Principal is `current_principal()`.
- `outgoing`: `bearer_headers` / `bearer_metadata` forward the caller's token on outgoing calls.
"""
