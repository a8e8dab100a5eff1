"""Safety checks of slth.supermask.ticket: a learned ticket rebuilds only into the model it was learned on."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

import slth.supermask as sm
from slth import ticketfile
from slth.supermask.ticket import from_ticket, materialize, to_ticket


def _user_net():
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def _user_model():
    return sm.apply_supermask(_user_net(), sm.SupermaskConfig(density=0.5), seed=1)


def _registry_model():
    return sm.build("fc", (1, 4, 4), 3, seed=0, hidden=[5], supermask=sm.SupermaskConfig(density=0.5))


def test_ticket_with_a_tensor_the_model_lacks():
    tf = to_ticket(_user_model())
    tf.config = dict(tf.config, layout=dict(tf.config["layout"], **{"extra.weight": [1]}))
    with pytest.raises(ticketfile.TicketFileError, match=r"has 'extra\.weight' \(1,\), which Sequential lacks"):
        from_ticket(tf, model=_user_net())


def test_materialize_needs_a_supermask_model():
    with pytest.raises(ValueError, match=r"materialize needs a model of slth\.supermask\.build or apply_supermask"):
        materialize(_user_net())


def test_materialize_of_a_user_model_needs_into():
    with pytest.raises(ValueError, match=r"this is a user's model \(.*\): pass materialize\(model, into="):
        materialize(_user_model())


def test_to_ticket_needs_a_supermask_model():
    with pytest.raises(ValueError, match=r"to_ticket needs a supermask model"):
        to_ticket(_user_net())


def test_from_ticket_refuses_another_kind():
    tf = to_ticket(_registry_model())
    tf.config = dict(tf.config, kind="constructed")
    with pytest.raises(ticketfile.TicketFileError, match=r"not a learned supermask ticket \(kind 'constructed'\)"):
        from_ticket(tf)


def test_from_ticket_refuses_masks_of_other_layers():
    tf = to_ticket(_registry_model())
    dropped = sorted(tf.masks)[0]
    del tf.masks[dropped]
    with pytest.raises(ticketfile.TicketFileError,
                       match=rf"ticket masks .* do not match the model's layers .*{dropped}"):
        from_ticket(tf)


def test_from_ticket_refuses_a_mask_of_the_wrong_shape():
    tf = to_ticket(_registry_model())
    name = sorted(tf.masks)[0]
    tf.masks[name] = tf.masks[name][:-1]
    with pytest.raises(ticketfile.TicketFileError, match=rf"mask '{name}' has shape \(\d+, \d+\), the layer"):
        from_ticket(tf)


def test_from_ticket_refuses_a_buffer_the_model_lacks():
    tf = to_ticket(_registry_model())
    tf.extras["buffer/nowhere"] = np.zeros(2, np.float32)
    with pytest.raises(ticketfile.TicketFileError, match=r"ticket buffer 'nowhere' does not fit the model"):
        from_ticket(tf)


def test_ticket_with_a_tensor_of_another_shape():
    tf = to_ticket(_user_model())
    tf.config = dict(tf.config, layout=dict(tf.config["layout"], **{"0.weight": [3, 5]}))
    with pytest.raises(ticketfile.TicketFileError,
                       match=r"'0\.weight' has shape \(3, 5\) in the ticket .*\(3, 4\) in Sequential"):
        from_ticket(tf, model=_user_net())


def test_model_with_a_tensor_the_ticket_lacks():
    tf = to_ticket(_user_model())
    tf.config = dict(tf.config, layout={k: v for k, v in tf.config["layout"].items() if k != "2.bias"})
    with pytest.raises(ticketfile.TicketFileError, match=r"Sequential has '2\.bias' \(2,\), which the ticket .* lacks"):
        from_ticket(tf, model=_user_net())


def test_ticket_of_a_user_model_needs_the_model():
    with pytest.raises(ValueError, match=r"this ticket was learned on a user's model .*from_ticket\(path, model="):
        from_ticket(to_ticket(_user_model()))


def test_from_ticket_needs_a_fresh_model():
    with pytest.raises(ValueError, match=r"from_ticket needs a fresh instance of the model, not one with supermasks"):
        from_ticket(to_ticket(_user_model()), model=_user_model())
