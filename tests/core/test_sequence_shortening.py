"""Shortening placeholder runs: the exact ids, masks, labels and position ids the language model gets."""

import pytest
import torch

from vtcompress.sequence import assign_images_to_samples, padding_side, row_padding, shorten_placeholder_runs

IMG, PAD = 9, 0


def t(rows):
    return torch.tensor(rows)


def test_right_padding_keeps_text_and_the_first_placeholders_of_each_run():
    ids = t([[5, IMG, IMG, IMG, IMG, 6, 7], [5, IMG, IMG, 6, PAD, PAD, PAD]])
    mask = t([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]])
    labels = torch.where(ids == IMG, -100, ids).masked_fill(mask == 0, -100)
    positions = t([[0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 1, 1, 1]])
    types = t([[0, 1, 1, 1, 1, 0, 0], [0, 1, 1, 0, 0, 0, 0]])
    out = shorten_placeholder_runs(
        ids,
        IMG,
        [4, 2],
        [2, 1],
        mask,
        {"labels": labels, "position_ids": positions, "token_type_ids": types},
        PAD,
    )
    assert out.keep.tolist() == [
        [True, True, True, False, False, True, True],
        [True, True, False, True, False, False, False],  # the input's padding goes too
    ]
    # Rows keep their padding side: real tokens first, the new padding at the end, and the batch
    # as long as its longest shortened row (7 - 2), not the longest input row minus a cut.
    assert out.input_ids.tolist() == [[5, IMG, IMG, 6, 7], [5, IMG, 6, PAD, PAD]]
    assert out.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert out.extras["labels"].tolist() == [[5, -100, -100, 6, 7], [5, -100, 6, -100, -100]]
    assert out.extras["token_type_ids"].tolist() == [[0, 1, 1, 0, 0], [0, 1, 0, 0, 0]]
    pos = out.extras["position_ids"]
    real = out.attention_mask.bool()
    assert pos[0, real[0]].tolist() == [0, 1, 2, 3, 4]  # contiguous again after the cut
    assert pos[1, real[1]].tolist() == [0, 1, 2]
    assert pos[1, 3:].tolist() == [1, 1]  # new padding takes the usual pad position 1
    assert (out.left_padded, out.lengths, out.removed) == (False, [5, 3], [2, 1])


def test_left_padding_moves_the_cut_rows_right_and_renumbers_positions():
    ids = t([[5, IMG, IMG, IMG, IMG, 6, 7], [PAD, PAD, PAD, 5, IMG, IMG, 6]])
    mask = t([[1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1]])
    positions = (mask.cumsum(1) - 1).masked_fill(mask == 0, 1)
    labels = torch.where((ids == IMG) | (mask == 0), -100, ids)
    out = shorten_placeholder_runs(
        ids, IMG, [4, 2], [1, 1], mask, {"position_ids": positions, "labels": labels}, PAD
    )
    # Row 0 loses 3 of 7 tokens, row 1 one of its 4 real ones: the batch is 4 long, left padded.
    assert out.input_ids.tolist() == [[5, IMG, 6, 7], [PAD, 5, IMG, 6]]
    assert out.attention_mask.tolist() == [[1, 1, 1, 1], [0, 1, 1, 1]]
    assert out.extras["position_ids"].tolist() == [[0, 1, 2, 3], [1, 0, 1, 2]]
    assert out.extras["labels"].tolist() == [[5, -100, 6, 7], [-100, 5, -100, 6]]
    assert (out.left_padded, out.lengths) == (True, [4, 3])


def test_a_longer_row_that_loses_more_sets_the_new_length():
    # Row 1 is the longer one padding included, but row 0 keeps more real tokens: the batch is 4
    # wide (row 0's 5 real tokens less 1), not 8 less the smallest cut.
    ids = t([[PAD, PAD, PAD, 5, 6, IMG, IMG, 7], [5, IMG, IMG, IMG, IMG, IMG, IMG, 7]])
    mask = (ids != PAD).long()
    out = shorten_placeholder_runs(ids, IMG, [2, 6], [1, 1], mask, pad_token_id=PAD)
    assert out.input_ids.tolist() == [[5, 6, IMG, 7], [PAD, 5, IMG, 7]]
    assert out.attention_mask.tolist() == [[1, 1, 1, 1], [0, 1, 1, 1]]


def test_masked_entries_inside_a_row_stay_and_only_the_padding_goes():
    ids = t([[PAD, PAD, 5, 8, IMG, IMG, 6], [5, 8, 8, IMG, IMG, 6, 7]])
    mask = t([[0, 0, 1, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])  # row 0 hides its second token
    out = shorten_placeholder_runs(ids, IMG, [2, 2], [1, 1], mask, pad_token_id=PAD)
    assert out.input_ids.tolist() == [[PAD, PAD, 5, 8, IMG, 6], [5, 8, 8, IMG, 6, 7]]
    assert out.attention_mask.tolist() == [[0, 0, 1, 0, 1, 1], [1, 1, 1, 1, 1, 1]]


def test_the_padding_side_is_read_from_the_mask_and_mixed_sides_raise():
    assert padding_side([2, 0], [0, 0]) is True
    assert padding_side([0, 0], [0, 3]) is False
    assert padding_side([0, 0], [0, 0]) is True  # no padding: re-padded on the left, as generate needs
    with pytest.raises(ValueError, match="padding_side"):
        padding_side([1, 0], [0, 2])
    ids = t([[PAD, 5, IMG, IMG], [5, IMG, IMG, PAD]])
    mask = (ids != PAD).long()
    assert [x.tolist() for x in row_padding(mask)] == [[1, 0], [0, 1]]
    with pytest.raises(ValueError, match="padding_side"):
        shorten_placeholder_runs(ids, IMG, [2, 2], [1, 1], mask, pad_token_id=PAD)


def test_uncut_batch_is_returned_unchanged():
    ids = t([[PAD, 5, IMG, IMG, 6], [5, 8, IMG, IMG, 6]])
    mask = t([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    positions = (mask.cumsum(1) - 1).masked_fill(mask == 0, 1)
    out = shorten_placeholder_runs(ids, IMG, [2, 2], [2, 2], mask, {"position_ids": positions}, PAD)
    assert torch.equal(out.input_ids, ids) and torch.equal(out.attention_mask, mask)
    assert torch.equal(out.extras["position_ids"], positions)
    assert torch.equal(out.keep, mask.bool())  # every real token stays; the padding is redone


def test_several_images_in_one_sample_are_cut_in_order():
    # Sample 0 holds images 0 and 1 (3 and 2 placeholders), sample 1 holds image 2.
    ids = t([[5, IMG, IMG, IMG, 6, IMG, IMG, 7], [5, IMG, IMG, IMG, IMG, 6, 7, 8]])
    out = shorten_placeholder_runs(ids, IMG, [3, 2, 4], [1, 2, 1], pad_token_id=PAD)
    assert out.input_ids.tolist() == [[5, IMG, 6, IMG, IMG, 7], [PAD, 5, IMG, 6, 7, 8]]
    # Without a mask every row ends with a real token: the batch is re-padded on the left.
    assert out.attention_mask.tolist() == [[1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1]]
    assert out.keep[0].tolist() == [True, True, False, False, True, True, True, True]


def test_a_later_image_in_a_sample_is_cut_at_its_own_run():
    # Image 0 (2 placeholders) keeps 1, image 1 (3 placeholders) keeps 1: positions 2, 5 and 6 go.
    ids = t([[5, IMG, IMG, 6, IMG, IMG, IMG, 7]])
    out = shorten_placeholder_runs(ids, IMG, [2, 3], [1, 1], pad_token_id=PAD)
    assert out.keep[0].tolist() == [True, True, False, True, True, False, False, True]
    assert out.input_ids.tolist() == [[5, IMG, 6, IMG, 7]]


def test_extras_with_trailing_dimensions_are_cut_alike():
    ids = t([[5, IMG, IMG, 6]])
    rope = torch.arange(12).view(1, 4, 3)  # e.g. multi-axis position ids [B, L, 3]
    out = shorten_placeholder_runs(ids, IMG, [2], [1], extras={"rope": rope})
    assert out.extras["rope"].tolist() == [[[0, 1, 2], [3, 4, 5], [9, 10, 11]]]


def test_placeholder_counts_that_do_not_add_up_raise():
    ids = t([[5, IMG, IMG, 6]])
    with pytest.raises(ValueError, match="unmodified input_ids"):
        shorten_placeholder_runs(ids, IMG, [3], [1])
    with pytest.raises(ValueError, match="no placeholder run"):
        shorten_placeholder_runs(ids, IMG, [2, 4], [1, 1])


def test_images_are_assigned_to_samples_in_batch_order():
    assert assign_images_to_samples([5, 0, 4], [3, 2, 4]) == [[0, 1], [], [2]]
    assert assign_images_to_samples([], []) == []
    with pytest.raises(ValueError, match=r"sample 0 .* \[3\]"):
        assign_images_to_samples([2], [3])
    with pytest.raises(ValueError, match="sample 1"):
        assign_images_to_samples([3, 3], [3, 2, 2])
    with pytest.raises(ValueError, match="1 image"):
        assign_images_to_samples([3], [3, 2])
