"""The prompts the synthetic corpus reads.

SA1 and SA2 are TIMIT's two dialect sentences, read by every TIMIT speaker; they
hold the 8 words of Beguš & Zhou (dark, greasy, wash, water, year; ask, oily, rag).
The other sentences were written for wavelens: ordinary read-speech prompts without
those 8 words, so the word counts of the corpus come from SA1 and SA2 alone.
"""

SA1 = "She had your dark suit in greasy wash water all year."
SA2 = "Don't ask me to carry an oily rag like that."

OTHER = (
    "The morning train was late again because of the snow.",
    "Please put the blue folder on the top shelf.",
    "My brother builds small boats in his garden shed.",
    "We walked along the river until the sun went down.",
    "The kitchen smelled of fresh bread and coffee.",
    "A quiet voice answered the phone after a long pause.",
    "They planted tomatoes and beans behind the house.",
    "The children counted the stars from the hilltop.",
    "Her old bicycle needs a new chain and brakes.",
    "Most of the museum was closed for repairs.",
    "The farmer sold apples and honey at the market.",
    "Turn left at the bakery and follow the narrow road.",
    "The storm knocked down three trees near the school.",
    "He forgot his umbrella in the back of the taxi.",
    "Every Sunday the band plays music in the park.",
    "The doctor asked him to breathe slowly and deeply.",
    "A small dog chased the ball across the field.",
    "The library lends books, maps and old newspapers.",
    "She painted the fence a bright shade of green.",
    "The pilot announced a short delay before landing.",
    "We shared a pot of soup on the cold evening.",
    "The students finished the puzzle before lunch.",
    "The lamp on his desk flickered and then went out.",
    "Fresh snow covered the roofs of the village.",
    "The baker opens the shop at six in the morning.",
    "A gentle wind moved the curtains by the window.",
    "The team celebrated the victory with a big dinner.",
    "He keeps his tools in a wooden box in the garage.",
    "The bus stops outside the post office every hour.",
    "Thin clouds drifted slowly over the mountains.",
    "Our neighbour fixed the broken gate on Friday.",
    "The teacher read a story about a brave sailor.",
    "Two cats slept in the sun on the porch.",
    "The concert ended with a long round of applause.",
    "Please close the door quietly when you leave.",
    "The bridge was painted red to match the boats.",
    "He measured the table twice before cutting the wood.",
    "The garden looked lovely after the spring rain.",
    "A loud bell rang at the end of the lesson.",
    "They found a lost key under the kitchen mat.",
)
