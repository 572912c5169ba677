--- Model facts: provider, prices and limits of the models luagent knows.
---
--- Source: LiteLLM's model_prices_and_context_window.json (BerriAI/litellm,
--- commit 00035b69f416be24e2e323c13198d9b7d2d1bdf9), which itself cites the
--- providers' price and model pages. Every figure below (except the mock
--- entry, which is luagent's own) was checked against
--- that file on 2026-12-06: input_cost_per_token, output_cost_per_token and
--- cache_read_input_token_cost (times 1e6), max_input_tokens (context_window)
--- and max_output_tokens (max_output). Models not found there were dropped.
--- The embedding models (mode "embedding" there) were added and checked
--- against the same file on 2026-12-07: input_cost_per_token (times 1e6)
--- and max_input_tokens; their output price is 0 there.
--- Prices are US dollars per million tokens (input, output, cached input
--- read); context_window and max_output are in tokens. Prices change after
--- the check: scripts override or add entries with llm.models.register{...},
--- which takes the same fields.
---
--- Keys are "provider/model"; a model named without a provider prefix is
--- looked up as "openai/<name>" (luagent's default provider), then by the
--- bare name across providers.
return {
  source = "LiteLLM model_prices_and_context_window.json (BerriAI/litellm@00035b69f416), "
    .. "which cites the providers' price pages; checked 2026-12-06, embedding models added 2026-12-07",
  date = "2026-12-07",
  unit = "USD per 1,000,000 tokens",
  models = {
    -- OpenAI
    ["openai/gpt-4o"]        = { input = 2.50, output = 10.00, cached_input = 1.25,  context_window = 128000,  max_output = 16384 },
    ["openai/gpt-4o-mini"]   = { input = 0.15, output = 0.60,  cached_input = 0.075, context_window = 128000,  max_output = 16384 },
    ["openai/gpt-4.1"]       = { input = 2.00, output = 8.00,  cached_input = 0.50,  context_window = 1047576, max_output = 32768 },
    ["openai/gpt-4.1-mini"]  = { input = 0.40, output = 1.60,  cached_input = 0.10,  context_window = 1047576, max_output = 32768 },
    ["openai/gpt-4.1-nano"]  = { input = 0.10, output = 0.40,  cached_input = 0.025, context_window = 1047576, max_output = 32768 },
    ["openai/gpt-4-turbo"]   = { input = 10.00, output = 30.00,                      context_window = 128000,  max_output = 4096 },
    ["openai/gpt-3.5-turbo"] = { input = 0.50, output = 1.50,                        context_window = 16385,   max_output = 4096 },
    ["openai/o1"]            = { input = 15.00, output = 60.00, cached_input = 7.50, context_window = 200000,  max_output = 100000 },
    ["openai/o3-mini"]       = { input = 1.10, output = 4.40,  cached_input = 0.55,  context_window = 200000,  max_output = 100000 },
    ["openai/o4-mini"]       = { input = 1.10, output = 4.40,  cached_input = 0.275, context_window = 200000,  max_output = 100000 },
    -- Anthropic (cached_input: prompt-cache reads)
    ["anthropic/claude-3-7-sonnet-20250219"] = { input = 3.00, output = 15.00, cached_input = 0.30, context_window = 200000, max_output = 64000 },
    ["anthropic/claude-3-haiku-20240307"]    = { input = 0.25, output = 1.25,  cached_input = 0.03, context_window = 200000, max_output = 4096 },
    -- claude-sonnet-4: prices for prompts up to 200k tokens (LiteLLM lists dearer rates above)
    ["anthropic/claude-sonnet-4-20250514"]   = { input = 3.00, output = 15.00, cached_input = 0.30, context_window = 1000000, max_output = 64000 },
    ["anthropic/claude-opus-4-20250514"]     = { input = 15.00, output = 75.00, cached_input = 1.50, context_window = 200000, max_output = 32000 },
    -- Google Gemini (prompts up to 200k tokens where the price has tiers)
    ["gemini/gemini-2.0-flash"] = { input = 0.10,  output = 0.40, cached_input = 0.025,   context_window = 1048576, max_output = 8192 },
    ["gemini/gemini-2.5-flash"] = { input = 0.30,  output = 2.50, cached_input = 0.03,    context_window = 1048576, max_output = 65535 },
    ["gemini/gemini-2.5-pro"]   = { input = 1.25,  output = 10.00, cached_input = 0.125,  context_window = 1048576, max_output = 65535 },
    -- Ollama runs models locally: no price; limits as LiteLLM lists them
    ["ollama/llama3"]   = { input = 0, output = 0, context_window = 8192, max_output = 8192 },
    ["ollama/llama3.1"] = { input = 0, output = 0, context_window = 8192, max_output = 8192 },
    -- Embeddings (llm.embedding): a price per input token, nothing for output.
    -- Left out: text-embedding-004/-005, which LiteLLM lists only as Vertex AI
    -- models priced per character (input_cost_per_character; luagent's gemini
    -- provider calls the Gemini API, counts no characters, and LiteLLM has no
    -- gemini/ entry for them), and Ollama, for which it lists no embedding
    -- model (an unlisted model costs 0, flagged estimated).
    ["openai/text-embedding-3-small"] = { input = 0.02, output = 0, context_window = 8191 },
    ["openai/text-embedding-3-large"] = { input = 0.13, output = 0, context_window = 8191 },
    ["openai/text-embedding-ada-002"] = { input = 0.10, output = 0, context_window = 8191 },
    -- gemini-embedding-2: the text price (it also lists per-image and per-second
    -- audio/video prices, for inputs luagent does not send)
    ["gemini/gemini-embedding-001"]        = { input = 0.15, output = 0, context_window = 2048 },
    ["gemini/gemini-embedding-2"]          = { input = 0.20, output = 0, context_window = 8192 },
    ["gemini/gemini-embedding-2-preview"]  = { input = 0.20, output = 0, context_window = 8192 },
    -- luagent's in-process mock (luagent's own, not from LiteLLM): free, small enough for specs to overflow
    ["mock/luagent-mock"] = { input = 0, output = 0, context_window = 8192, max_output = 4096 },
  },
}
