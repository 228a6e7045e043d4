"""Sequence tagging: CoNLL-style files and a generated toy part-of-speech task."""

from __future__ import annotations

import torch

from rnnkit.data._checks import check_fraction, check_int, check_path, check_seed, read_utf8

__all__ = ["read_conll", "synthetic_tagging", "TAGS", "ROLE_TAGS", "AGREEMENT_TAGS"]


def read_conll(path) -> list[tuple[list[str], list[str]]]:
    """Read tagged sentences from a CoNLL-style file.

    One ``token<TAB>tag`` per line (or two whitespace-separated columns when the line
    has no tab), a blank line between sentences. ``-DOCSTART-`` lines (CoNLL-2003
    document markers) are skipped.

    Returns:
        a list of ``(tokens, tags)``, one per sentence, the two lists of equal length.

    Raises:
        ValueError: a line does not have exactly two columns (naming the file and the
            1-based line number), the file is not UTF-8, or it holds no sentences.
    """
    path = check_path("path", path)
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    for number, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        fields = [f.strip() for f in fields]
        if len(fields) != 2 or not all(fields):
            raise ValueError(f"{path}, line {number}: expected two columns, token and tag "
                             f"(tab- or space-separated), got {line!r:.80}")
        if fields[0] == "-DOCSTART-":
            continue
        tokens.append(fields[0])
        tags.append(fields[1])
    if tokens:
        sentences.append((tokens, tags))
    if not sentences:
        raise ValueError(f"CoNLL file {path} holds no sentences")
    return sentences


#: The tags of :func:`synthetic_tagging`.
TAGS = ("DET", "ADJ", "NOUN", "VERB", "PREP", "ADV", "PUNCT", "COMP")
#: the noun tags of ``synthetic_tagging(roles=True)``: the head of the subject, of the
#: object, or of a noun phrase inside a prepositional phrase
ROLE_TAGS = ("NOUN-SUBJ", "NOUN-OBJ", "NOUN-PREP")
#: the verb tags of ``synthetic_tagging(agreement=True)``: the number of the subject,
#: which the (uninflected) verb itself does not show
AGREEMENT_TAGS = ("VERB-SG", "VERB-PL")

_DETERMINERS = ("the", "a", "every", "this")
_PLURAL_DETERMINERS = ("the", "some", "these", "many")
#: the deepest nesting of relative clauses ``synthetic_tagging`` makes
MAX_EMBEDDING = 8
_ADJECTIVES = ("big", "small", "red", "old", "quick", "lazy")
_PREPOSITIONS = ("near", "with", "behind")
_ADVERBS = ("slowly", "often", "today")
# Words that are a noun or a verb depending on where they stand: the tagger has to
# look at the context, a per-token lookup cannot tag them.
_AMBIGUOUS = ("run", "watch", "fly", "park", "book")
_NOUNS = ("dog", "cat", "child", "teacher", "garden") + _AMBIGUOUS
_VERBS = ("see", "like", "chase", "find") + _AMBIGUOUS


def _plural(noun: str) -> str:
    if noun.endswith(("ch", "sh", "s")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def synthetic_tagging(n: int, *, seed: int = 0, max_adjectives: int = 2,
                      max_modifiers: int = 0, ambiguity: float = 0.0,
                      roles: bool = False,
                      agreement: bool = False,
                      max_embedding: int = 0) -> list[tuple[list[str], list[str]]]:
    """Sentences of a toy grammar with their part-of-speech tags.

    Grammar (``[...]`` optional, ``ADJ*`` 0 .. max_adjectives, ``(PREP NP)*`` 0 ..
    max_modifiers, ``SV_k`` a subject with k relative clauses nested in it, k drawn from
    0 .. max_embedding)::

        S    -> SV_k [NP [PREP NP]] [ADV] "."
        SV_0 -> NP (PREP NP)* VERB
        SV_k -> NP (PREP NP)* "that" SV_(k-1) VERB
        NP   -> DET ADJ* NOUN

    The tags follow deterministically from the tokens and their context: determiners,
    adjectives, prepositions and adverbs are unambiguous words, and the ambiguous words
    (run, watch, fly, park, book) are NOUN where a noun phrase ends and VERB right after
    the subject and its modifiers. So a tagger can reach 100% accuracy, but only by
    using context. With ``ambiguity`` > 0, that share of nouns and verbs are drawn from
    the ambiguous words (else they are as likely as any other), so tagging each word
    by its most frequent tag fails more often. With ``roles``, a noun's tag also says its
    role (:data:`ROLE_TAGS`): subject, object or inside a prepositional phrase, which
    depends on whether the verb came before it, however many phrases back. With
    ``agreement``, every noun phrase is singular or plural (a plural noun ends in "s",
    after a plural determiner), and the verb's tag (:data:`AGREEMENT_TAGS`) is the number
    of the subject: the verb is the same word either way, so the tagger must carry the
    subject's number across the prepositional phrases, whose nouns have numbers of their
    own (the "attractors" of Linzen et al. 2016, "Assessing the ability of LSTMs to
    learn syntax-sensitive dependencies"). With ``max_embedding``, relative clauses nest
    in the subject ("the dog that the cats that the child sees chase runs"): each verb
    agrees with its own clause's subject, so the tagger must keep a stack of numbers,
    and the verbs close in the reverse order of their subjects.

    Args:
        n: number of sentences.
        seed: seed of the generator.
        max_adjectives: most adjectives per noun phrase.
        max_modifiers: most prepositional phrases between the subject and the verb.
        ambiguity: the share in [0, 1] of nouns and verbs drawn from the ambiguous words
            (0: drawn uniformly from all nouns or verbs).
        roles: tag nouns with their role (NOUN-SUBJ, NOUN-OBJ, NOUN-PREP) instead of NOUN.
        agreement: tag the verb with the subject's number (VERB-SG, VERB-PL) instead of
            VERB.
        max_embedding: most relative clauses nested in the subject (0 .. MAX_EMBEDDING;
            "that" is tagged COMP).

    Returns:
        ``n`` pairs ``(tokens, tags)``, tags from :data:`TAGS` (and :data:`ROLE_TAGS`,
        :data:`AGREEMENT_TAGS`).
    """
    check_int("n", n)
    check_seed("seed", seed)
    check_int("max_adjectives", max_adjectives, minimum=0)
    check_int("max_modifiers", max_modifiers, minimum=0)
    check_int("max_embedding", max_embedding, minimum=0, maximum=MAX_EMBEDDING)
    check_fraction("ambiguity", ambiguity, closed=True)
    for name, value in (("roles", roles), ("agreement", agreement)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, got {value!r}")
    g = torch.Generator().manual_seed(seed)

    def pick(words):
        if ambiguity and words in (_NOUNS, _VERBS) and \
                float(torch.rand((), generator=g)) < ambiguity:
            words = _AMBIGUOUS
        return words[int(torch.randint(0, len(words), (1,), generator=g))]

    def chance() -> bool:
        return bool(torch.randint(0, 2, (1,), generator=g))

    def noun_phrase(out, role) -> bool:
        """Append a noun phrase; whether it is plural."""
        plural = agreement and chance()
        out.append((pick(_PLURAL_DETERMINERS if plural else _DETERMINERS), "DET"))
        for _ in range(int(torch.randint(0, max_adjectives + 1, (1,), generator=g))):
            out.append((pick(_ADJECTIVES), "ADJ"))
        noun = pick(_NOUNS)
        out.append((_plural(noun) if plural else noun,
                    f"NOUN-{role}" if roles else "NOUN"))
        return plural

    def subject_and_verb(out, embeddings: int):
        """Append a subject, its modifiers, ``embeddings`` relative clauses nested in
        it (``that`` + subject + verb, centre-embedded), and its verb."""
        plural_subject = noun_phrase(out, "SUBJ")
        for _ in range(int(torch.randint(0, max_modifiers + 1, (1,), generator=g))):
            out.append((pick(_PREPOSITIONS), "PREP"))
            noun_phrase(out, "PREP")
        if embeddings:
            out.append(("that", "COMP"))
            subject_and_verb(out, embeddings - 1)
        verb_tag = ("VERB-PL" if plural_subject else "VERB-SG") if agreement else "VERB"
        out.append((pick(_VERBS), verb_tag))

    data = []
    for _ in range(n):
        words: list[tuple[str, str]] = []
        subject_and_verb(words, int(torch.randint(0, max_embedding + 1, (1,), generator=g))
                         if max_embedding else 0)
        if chance():
            noun_phrase(words, "OBJ")
            if chance():
                words.append((pick(_PREPOSITIONS), "PREP"))
                noun_phrase(words, "PREP")
        if chance():
            words.append((pick(_ADVERBS), "ADV"))
        words.append((".", "PUNCT"))
        data.append(([w for w, _ in words], [t for _, t in words]))
    return data
