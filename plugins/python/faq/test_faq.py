"""Native unit tests of the FAQ logic: `python3 -m unittest` in this folder."""

import unittest

from faq import Entry, FaqError, best_match, is_question, normalize, parse_bool, parse_table

TABLE = """[
  {"id": "hours", "keywords": ["open", "opening hours", "close"], "answer": "9 to 5."},
  {"id": "wifi", "keywords": ["wifi", "password", "internet"], "answer": "Ask the desk."},
  {"keywords": ["parking"], "answer": "Lot B."}
]"""


class ParseTable(unittest.TestCase):
    def test_list_form(self):
        entries = parse_table(TABLE)
        self.assertEqual([e.id for e in entries], ["hours", "wifi", "3"])
        self.assertEqual(entries[0].keywords, ("open", "opening hours", "close"))

    def test_object_form(self):
        entries = parse_table('{"Wi-Fi": "Ask the desk."}')
        self.assertEqual(entries, [Entry("wi-fi", ("wi fi",), "Ask the desk.")])

    def test_errors_name_the_entry(self):
        for text, fragment in [
            ("not json", "not JSON"),
            ("3", "must be a JSON list"),
            ('[{"keywords": ["a"]}]', "entry 1: needs a non-empty"),
            ('[{"answer": "x", "keywords": []}]', "at least one keyword"),
            ('[{"answer": "x", "keywords": "a", "id": "k"}, {"answer": "y", "keywords": "b", "id": "K"}]', "used twice"),
        ]:
            with self.subTest(text=text):
                with self.assertRaises(FaqError) as caught:
                    parse_table(text)
                self.assertIn(fragment, str(caught.exception))


class Matching(unittest.TestCase):
    def setUp(self):
        self.entries = parse_table(TABLE)

    def test_normalize(self):
        self.assertEqual(normalize("  Café's  OPEN?! "), "cafe s open")

    def test_most_keywords_wins(self):
        match = best_match(self.entries, "What is the wifi password? Are you open?")
        self.assertEqual(match.id, "wifi")

    def test_phrases_and_whole_words(self):
        self.assertEqual(best_match(self.entries, "Opening hours, please?").id, "hours")
        # "opener" is not "open".
        self.assertIsNone(best_match(self.entries, "Where is the bottle opener?"))

    def test_ties_go_to_the_first_entry(self):
        self.assertEqual(best_match(self.entries, "open wifi?").id, "hours")

    def test_min_score(self):
        self.assertIsNone(best_match(self.entries, "wifi?", min_score=2))
        self.assertEqual(best_match(self.entries, "wifi password?", min_score=2).id, "wifi")

    def test_helpers(self):
        self.assertTrue(is_question("parking?"))
        self.assertFalse(is_question("parking"))
        self.assertFalse(parse_bool("no", True))
        self.assertTrue(parse_bool("maybe", True))


if __name__ == "__main__":
    unittest.main()
