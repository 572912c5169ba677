-- Reads a stream (anything with :next()) to its end for a spec: the text
-- of its chunks' deltas and the last usage it carried. A stream that
-- fails fails the spec.
return function(s)
  local text, usage = {}, nil
  while true do
    local c, err = s:next()
    if not c then
      assert(err == nil, err and err.message)
      break
    end
    local d = c.choices[1] and c.choices[1].delta
    text[#text + 1] = d and d.content or nil
    usage = c.usage or usage
  end
  return table.concat(text), usage
end
