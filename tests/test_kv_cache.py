"""The cache argument is passed under the name the decoder's forward takes, old or new."""

from __future__ import annotations

from types import SimpleNamespace

from fincocktail.models.kv_cache import cache_kwargs, output_cache


class OldDecoder:
    def forward(self, input_ids=None, past_key_values=None, use_cache=None, **kwargs): ...


class NewDecoder:
    def forward(self, input_ids=None, cache=None, use_cache=None, **kwargs): ...


def test_the_cache_goes_in_under_the_decoders_own_name():
    cache = object()
    assert cache_kwargs(OldDecoder(), cache) == {"past_key_values": cache}
    assert cache_kwargs(NewDecoder(), cache) == {"cache": cache}


def test_the_returned_cache_is_read_under_either_name():
    cache = object()
    assert output_cache(SimpleNamespace(cache=cache)) is cache
    assert output_cache(SimpleNamespace(past_key_values=cache)) is cache
    assert output_cache(SimpleNamespace(cache=None, past_key_values=None)) is None


def test_the_installed_transformers_decoder_is_called_without_its_deprecated_name(tiny_model_dir):
    import inspect

    from transformers import AutoModelForCausalLM

    decoder = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).get_decoder()
    name = next(iter(cache_kwargs(decoder, None)))
    assert name in inspect.signature(type(decoder).forward).parameters
