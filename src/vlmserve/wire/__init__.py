"""Wire formats shared by the API surfaces, the engine backends and the runners (one definition each).

`bounds`: the bounds of every wire number. `openai_models`: OpenAI's request schemas (validation).
`openai_codec`: OpenAI requests <-> domain. `openai_answers`: OpenAI answers and stream chunks <-> domain.
Imports point down only: domain types, and the pure media helpers that turn data URIs into bytes.
"""
