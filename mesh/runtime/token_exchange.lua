-- The edge's token exchange, with a cache: the external token (verified by jwt_authn before this
-- filter) is exchanged by auth for the internal JWT that the services verify, and the answer is
-- kept for a while, so a client's next requests need no call to auth at all.
--
-- Envoy keeps one Lua state per worker thread and per listener, and its globals live as long as
-- the worker: the cache below is shared by every request and connection that worker serves on
-- one listener. Once every MAX_AGE_S the tokens past their usable time are dropped, and when
-- MAX_ENTRIES usable tokens fill it, it starts again empty.
--
-- An exchange is fresh for at most MAX_AGE_S (less a random part of it) and usable for as long as
-- auth allows (its Cache-Control max-age: the internal token's remaining life). Past fresh, the
-- next request asks auth again while the others keep the usable token for up to REFRESH_S (a
-- token's requests do not all ask at once: without it, a burst of tokens falling due together
-- asked auth for each of their requests until the first answers came back, and the calls piled
-- up). A refused refresh (a blocked user) drops the token at once. While auth is away a usable
-- token keeps working; one that is not usable gets a 503 problem (cached-last-good for what is
-- cached, fail-closed for the rest).
--
-- The constants MAX_AGE_S, JITTER, MAX_ENTRIES, AUTH_CLUSTER, TIMEOUT_MS and METADATA are
-- prepended by mesh/runtime/edge_config.py.

local REFRESH_S = math.ceil(TIMEOUT_MS / 1000) + 1
local INTERNAL, FRESH_UNTIL, USABLE_UNTIL, REFRESHING_UNTIL = 1, 2, 3, 4

local cache = {}
local entries = 0
local next_sweep = 0

-- Wall-clock seconds with milliseconds (os.time() counts whole seconds, too coarse for a fresh
-- time of one or two seconds).
local function seconds(handle)
  return handle:timestamp() / 1000
end

-- Drops the exchanges past their usable time: without it a long-lived edge would keep every
-- token it ever saw until the cache was full, then ask auth again for every client at once.
local function sweep(now)
  for key, entry in pairs(cache) do
    if entry[USABLE_UNTIL] <= now then
      cache[key] = nil
      entries = entries - 1
    end
  end
  next_sweep = now + MAX_AGE_S
end

-- Fresh counts from the answer, usable from the question: a slow refresh does not leave the
-- exchange already past fresh (the token's next request would ask again at once), and the
-- internal token's life, which auth measured when it answered, is never overrun.
local function remember(key, internal, fresh_s, usable_s, asked, answered)
  if entries >= MAX_ENTRIES then
    sweep(answered)
  end
  if entries >= MAX_ENTRIES then
    cache = {}
    entries = 0
  end
  if cache[key] == nil then
    entries = entries + 1
  end
  cache[key] = {internal, answered + fresh_s, asked + usable_s, 0}
end

local function forget(key)
  if key ~= nil and cache[key] ~= nil then
    cache[key] = nil
    entries = entries - 1
  end
end

-- How long auth allows the exchange to be used (its Cache-Control max-age), and how long to
-- keep it fresh: at most MAX_AGE_S, less a random part of it, so that tokens first seen together
-- (a burst of new clients) are not all asked for again in the same second.
local function lifetimes(cache_control)
  local seconds = cache_control and string.match(cache_control, "max%-age=(%d+)")
  if seconds == nil then
    return 0, 0
  end
  local usable = tonumber(seconds)
  return math.min(usable, MAX_AGE_S) * (1 - JITTER * math.random()), usable
end

local UNAVAILABLE = '{"type":"/problems/unavailable","title":"Service Unavailable","status":503,'
  .. '"detail":"the token exchange (auth) did not answer; retry later"}'

local function refused(reply)
  local content_type = reply["content-type"] or ""
  return (reply[":status"] == "401" or reply[":status"] == "403")
    and string.find(content_type, "problem+json", 1, true) ~= nil
end

local function refuse(handle, reply, body)
  -- A local reply: without this mark the edge's local-reply mappers would rewrite auth's
  -- problem document (see _local_reply in edge_config.py).
  handle:streamInfo():dynamicMetadata():set(METADATA, "auth_refused", true)
  if refused(reply) then
    local headers = {[":status"] = reply[":status"], ["content-type"] = reply["content-type"]}
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
  local now = seconds(handle)
  if now >= next_sweep then
    sweep(now)
  end
  local known = external and cache[external]
  if known ~= nil then
    local usable = now < known[USABLE_UNTIL]
    if now < known[FRESH_UNTIL] or (usable and now < known[REFRESHING_UNTIL]) then
      headers:replace("authorization", known[INTERNAL])
      return
    end
    if usable then
      known[REFRESHING_UNTIL] = now + REFRESH_S
    end
  end
  -- No header: a WebSocket's token in the query string, which auth reads from the path.
  local ask = {[":method"] = "GET", [":path"] = "/auth/ext-authz" .. headers:get(":path"),
               [":authority"] = "auth"}
  ask["authorization"] = external
  local reply, body = handle:httpCall(AUTH_CLUSTER, ask, "", TIMEOUT_MS)
  local internal = reply["authorization"]
  if reply[":status"] ~= "200" or internal == nil then
    if refused(reply) then
      forget(external)
    elseif known ~= nil and seconds(handle) < known[USABLE_UNTIL] then
      -- Auth is away: the token it gave before is still good.
      handle:headers():replace("authorization", known[INTERNAL])
      return
    end
    refuse(handle, reply, body)
    return
  end
  local fresh_s, usable_s = lifetimes(reply["cache-control"])
  if external ~= nil and fresh_s > 0 then
    remember(external, internal, fresh_s, usable_s, now, seconds(handle))
  end
  -- The header map fetched before httpCall is no longer valid after it: fetch it again.
  handle:headers():replace("authorization", internal)
end
