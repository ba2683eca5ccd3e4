"""The llama engine loop: one thread per model copy owns the llama context.

It admits requests into slots, plans each step's batch (generating slots' next tokens first,
then prompt chunks), decodes once, samples every slot on its own batch row with a llama.cpp
sampler chain, detokenizes, and hands each slot's text on. Nothing else in the worker touches
the context, and per token and slot Python does O(1) work (a request that asked for logprobs
reads its own row). See `workers.engines.loop.engine_loop` for the loop, and
`workers.engines.loop.model` for how a worker serves with it.
"""
