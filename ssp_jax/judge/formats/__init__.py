"""Judge formats, one module each: rubric, llama_guard, harmbench, wildguard, strongreject."""
