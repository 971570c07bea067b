"""The kg stage: entities from Wikidata (SPARQL) and WordNet (nltk)."""
