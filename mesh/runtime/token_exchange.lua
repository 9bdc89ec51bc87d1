-- The edge's token exchange, with a cache: the external token (verified by jwt_authn before this
-- filter) is exchanged by auth for the internal JWT that the services verify, and the answer is
-- kept for a while, so a client's next requests need no call to auth at all.
--
-- Envoy keeps one Lua state per worker thread, and its globals live as long as the worker: the
-- cache below is per worker, shared by every request and connection that worker serves. It holds
-- at most MAX_ENTRIES tokens (then it starts again empty) and each for at most MAX_AGE_S, never
-- longer than auth allows (its Cache-Control max-age: the internal token's remaining life).
-- A cached exchange is served even while auth is away; a token not in the cache then gets a 503
-- problem (cached-last-good for what is cached, fail-closed for the rest).
--
-- The constants MAX_AGE_S, JITTER, MAX_ENTRIES, AUTH_CLUSTER, TIMEOUT_MS and METADATA are prepended by
-- mesh/runtime/edge_config.py.

local cache = {}
local entries = 0

local function remember(key, internal, lifetime_s, now)
  if entries >= MAX_ENTRIES then
    cache = {}
    entries = 0
  end
  if cache[key] == nil then
    entries = entries + 1
  end
  cache[key] = {internal, now + lifetime_s}
end

-- How long to keep an exchange: what auth allows, at most MAX_AGE_S, less a random part of it,
-- so that tokens first seen together (a burst of new clients) are not all asked for again in
-- the same second.
local function lifetime(cache_control)
  local seconds = cache_control and string.match(cache_control, "max%-age=(%d+)")
  if seconds == nil then
    return 0
  end
  local allowed = math.min(tonumber(seconds), MAX_AGE_S)
  return math.floor(allowed * (1 - JITTER * math.random()))
end

local UNAVAILABLE = '{"type":"/problems/unavailable","title":"Service Unavailable","status":503,'
  .. '"detail":"the token exchange (auth) did not answer; retry later"}'

local function refuse(handle, reply, body)
  local status = reply[":status"]
  local content_type = reply["content-type"] or ""
  -- A local reply: without this mark the edge's local-reply mappers would rewrite auth's
  -- problem document (see _local_reply in edge_config.py).
  handle:streamInfo():dynamicMetadata():set(METADATA, "auth_refused", true)
  if (status == "401" or status == "403") and string.find(content_type, "problem+json", 1, true) then
    local headers = {[":status"] = status, ["content-type"] = content_type}
    headers["www-authenticate"] = reply["www-authenticate"]
    handle:respond(headers, body)
  else
    handle:respond({[":status"] = "503", ["content-type"] = "application/problem+json",
                    ["retry-after"] = "1"}, UNAVAILABLE)
  end
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local external = headers:get("authorization")
  local now = os.time()
  if external ~= nil then
    local known = cache[external]
    if known ~= nil and known[2] > now then
      headers:replace("authorization", known[1])
      return
    end
  end
  -- No header: a WebSocket's token in the query string, which auth reads from the path.
  local ask = {[":method"] = "GET", [":path"] = "/auth/ext-authz" .. headers:get(":path"),
               [":authority"] = "auth"}
  ask["authorization"] = external
  local reply, body = handle:httpCall(AUTH_CLUSTER, ask, "", TIMEOUT_MS)
  local internal = reply["authorization"]
  if reply[":status"] ~= "200" or internal == nil then
    refuse(handle, reply, body)
    return
  end
  local lifetime_s = lifetime(reply["cache-control"])
  if external ~= nil and lifetime_s > 0 then
    remember(external, internal, lifetime_s, now)
  end
  -- The header map fetched before httpCall is no longer valid after it: fetch it again.
  handle:headers():replace("authorization", internal)
end
