-- Answers "ping" with "pong" carrying the same payload; returns the number of pings on "stop".
local function main()
  local count = 0
  local inbox = process.inbox()
  while true do
    local msg = inbox:receive()
    if msg:topic() == "stop" then
      return "answered " .. count .. " pings"
    end
    count = count + 1
    process.send(msg:from(), "pong", msg:payload():data())
  end
end

return { main = main }
