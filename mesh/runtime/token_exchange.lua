-- The edge's token exchange, with a cache: the external token (verified by jwt_authn before this
-- filter) is exchanged by auth for the internal JWT that the services verify, and the answer is
-- kept for a while, so a client's next requests need no call to auth at all.
--
-- Envoy keeps one Lua state per worker thread and per listener, and its globals live as long as
-- the worker: the cache below is shared by every request and connection that worker serves on
-- one listener. Once every MAX_AGE_S the tokens past their usable time are dropped, and when
-- MAX_ENTRIES usable tokens fill it, it starts again empty.
--
-- An exchange is usable for as long as auth allows (its Cache-Control max-age: the internal
-- token's remaining life) and fresh for less: past fresh, the next request asks auth again while
-- the others keep the usable token for up to REFRESH_S (a token's requests do not all ask at
-- once: without it, a burst of tokens falling due together asked auth for each of their requests
-- until the first answers came back, and the calls piled up). A refused refresh (a blocked user)
-- drops the token at once. While auth is away a usable token keeps working; one that is not
-- usable gets a 503 problem (cached-last-good for what is cached, fail-closed for the rest).
--
-- How long fresh is depends on whether this worker would hear of the user's block. Every
-- BLOCKS_EVERY_S, while requests come, it asks auth which users were blocked lately (GET
-- BLOCKS_PATH, services/auth/blocks.py) and drops their exchanges. While those answers are
-- current (the last one at most BLOCKS_STALE_S old) and cover the time since an exchange was
-- asked for, the exchange stays fresh until shortly before it expires; otherwise for at most
-- MAX_AGE_S, after which auth's answer to the refresh is what catches a block. Either way less
-- a random part (JITTER), so that tokens first seen together are not all asked for again in the
-- same second.
--
-- The constants MAX_AGE_S, JITTER, MAX_ENTRIES, AUTH_CLUSTER, TIMEOUT_MS, BLOCKS_PATH,
-- BLOCKS_EVERY_S, BLOCKS_STALE_S, BLOCKS_TIMEOUT_MS and METADATA are prepended by
-- mesh/components/edge.py.

local REFRESH_S = math.ceil(TIMEOUT_MS / 1000) + 1
local INTERNAL, FRESH_UNTIL, USABLE_UNTIL, REFRESHING_UNTIL, KEPT_UNTIL, SUBJECT, ASKED =
  1, 2, 3, 4, 5, 6, 7
-- Auth's clock and this edge's may differ by this much (one machine, or hosts kept in sync).
local SKEW_S = 1

local cache = {}
local entries = 0
-- subject -> {external token -> true}: the exchanges a block drops.
local by_subject = {}
local next_sweep = 0
-- What auth's answers on blocks have covered, on auth's clock: every block learnt from
-- blocks_from to blocks_to has been applied here. nil until the first answer that says so.
local blocks_from, blocks_to = nil, nil
local next_blocks = 0

-- Wall-clock seconds with milliseconds (os.time() counts whole seconds, too coarse for a fresh
-- time of one or two seconds).
local function seconds(handle)
  return handle:timestamp() / 1000
end

local function unindex(key, entry)
  local subject = entry[SUBJECT]
  local keys = subject and by_subject[subject]
  if keys ~= nil then
    keys[key] = nil
    if next(keys) == nil then
      by_subject[subject] = nil
    end
  end
end

local function forget(key)
  local entry = key and cache[key]
  if entry ~= nil then
    unindex(key, entry)
    cache[key] = nil
    entries = entries - 1
  end
end

-- Drops the exchanges past their usable time: without it a long-lived edge would keep every
-- token it ever saw until the cache was full, then ask auth again for every client at once.
local function sweep(now)
  for key, entry in pairs(cache) do
    if entry[USABLE_UNTIL] <= now then
      forget(key)
    end
  end
  next_sweep = now + MAX_AGE_S
end

-- Fresh counts from the answer, usable from the question: a slow refresh does not leave the
-- exchange already past fresh (the token's next request would ask again at once), and the
-- internal token's life, which auth measured when it answered, is never overrun.
local function remember(key, internal, subject, lifetimes, asked, answered)
  local fresh_s, kept_s, usable_s = lifetimes[1], lifetimes[2], lifetimes[3]
  if entries >= MAX_ENTRIES then
    sweep(answered)
  end
  if entries >= MAX_ENTRIES then
    cache, by_subject = {}, {}
    entries = 0
  end
  forget(key)
  cache[key] = {internal, answered + fresh_s, asked + usable_s, 0, answered + kept_s, subject,
                asked}
  entries = entries + 1
  if subject ~= nil then
    by_subject[subject] = by_subject[subject] or {}
    by_subject[subject][key] = true
  end
end

-- From auth's Cache-Control max-age (how long the exchange may be used): how long it is fresh
-- without news of blocks, how long with it, and how long it is usable.
local function lifetimes(cache_control)
  local seconds = cache_control and string.match(cache_control, "max%-age=(%d+)")
  if seconds == nil then
    return nil
  end
  local usable = tonumber(seconds)
  local share = 1 - JITTER * math.random()
  -- Refreshed at least REFRESH_S before it expires: its other requests keep it meanwhile.
  local kept = math.max(usable - REFRESH_S - 1, 0) * share
  return {math.min(usable, MAX_AGE_S) * share, kept, usable}
end

-- Whether this worker would have heard by now that the exchange's user was blocked.
local function covered(entry, now)
  return entry[SUBJECT] ~= nil and blocks_from ~= nil and entry[ASKED] >= blocks_from + SKEW_S
    and now - blocks_to <= BLOCKS_STALE_S + SKEW_S
end

local function drop_subject(subject)
  for key in pairs(by_subject[subject] or {}) do
    forget(key)
  end
end

-- Asks auth which users were blocked lately (whichever instance answers: each says since when
-- its list is whole) and drops their exchanges, every one of them: an exchange asked for after
-- the block was made by an instance that had not heard of it yet.
local function ask_blocks(handle, now)
  next_blocks = now + BLOCKS_EVERY_S
  local ask = {[":method"] = "GET", [":path"] = BLOCKS_PATH, [":authority"] = "auth"}
  local reply, body = handle:httpCall(AUTH_CLUSTER, ask, "", BLOCKS_TIMEOUT_MS)
  local from = tonumber(reply["x-blocks-complete-from"] or "")
  if reply[":status"] ~= "200" or from == nil then
    return
  end
  for subject in string.gmatch(body or "", "[^\n]+") do
    drop_subject(subject)
  end
  local current = tonumber(reply["x-blocks-current-at"] or "")
  if current == nil then
    return
  end
  if blocks_to == nil or from > blocks_to then
    -- A gap: what was learnt before `from` and not heard of here may be missing.
    blocks_from = from
  end
  blocks_to = math.max(blocks_to or current, current)
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
  local external = handle:headers():get("authorization")
  local now = seconds(handle)
  if now >= next_sweep then
    sweep(now)
  end
  if external ~= nil and now >= next_blocks then
    ask_blocks(handle, now)
    now = seconds(handle)
  end
  -- A header map fetched before an httpCall is no longer valid after it: fetched when needed.
  local known = external and cache[external]
  if known ~= nil then
    local usable = now < known[USABLE_UNTIL]
    local fresh = now < known[FRESH_UNTIL] or (now < known[KEPT_UNTIL] and covered(known, now))
    if fresh or (usable and now < known[REFRESHING_UNTIL]) then
      handle:headers():replace("authorization", known[INTERNAL])
      return
    end
    if usable then
      known[REFRESHING_UNTIL] = now + REFRESH_S
    end
  end
  -- No header: a WebSocket's token in the query string, which auth reads from the path.
  local path = "/auth/ext-authz" .. handle:headers():get(":path")
  local ask = {[":method"] = "GET", [":path"] = path, [":authority"] = "auth"}
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
  local kept = lifetimes(reply["cache-control"])
  if external ~= nil and kept ~= nil and kept[1] > 0 then
    remember(external, internal, reply["x-subject"], kept, now, seconds(handle))
  end
  handle:headers():replace("authorization", internal)
end
