"""The word lists the name detector reads: stop words, ambiguous names, common first names.

Plain data; internal to the privacy package (hence the underscores).
"""

from __future__ import annotations

# Capitalised words that end a name: "John Monday" is John (then a weekday).
_NAME_STOP = frozenset("""
I I'm I've I'll I'd A An The This That These Those My Your His Her Our Their It Its We You He She They
And Or But So If When Then Also Just Yes No Not Ok OK Okay Hi Hey Hello Thanks Thank Please Sorry Dear
Mr Mrs Ms Miss Dr Prof Sir Madam Herr Frau Mme
Monday Tuesday Wednesday Thursday Friday Saturday Sunday Today Tomorrow Yesterday Tonight
January February March April May June July August September October November December
Street Road Avenue Lane Drive Court Place Square Park Way
Inc Ltd LLC GmbH AG Corp Co Company University Hospital School Bank Team Group
""".split())

# Words that are common first names *and* common words or places: only a name
# when a capitalised surname follows or a strong cue precedes them.
_AMBIGUOUS_NAMES = frozenset("""
Will May June April August Mark Bill Grace Hope Joy Faith Rose Summer Autumn Dawn Art Sue Pat Guy Ray
Jack Frank Chase Eve Max Sunny Holly Ivy Lily Iris Ruby Amber Crystal Jade Pearl Sky River Storm Page
Hunter Mason Carter Cash Drew Dean Don Gene Glen Grant Miles Norm Rod Rusty Sandy Skip Wade Jean Ernst
Wolf Angel Destiny Harmony Melody Honey Paris Florence Sydney Austin Dallas Chelsea Jordan Georgia
Virginia Carolina Victoria Lincoln Washington Houston Madison Savannah Phoenix Orlando Regina Adelaide
Kent Troy Brook Brooke Bob Sam Tom Nick Rob Jo Al Ben Dick Bud Sonny Gabe Fabian Jasmine Violet Heather
Olive Hazel Willow Sage Robin Bella Mia Eden Rain Cliff Heath Lane Royal King Prince Duke Earl Noble
Marshall Taylor Parker Cooper Porter Fletcher Tucker Spencer Harper Sawyer Hudson Dakota Cheyenne
Maria Angela Christian Constance Patience Prudence Mercy Trinity Genesis Charity Serenity Bliss
Nora Ava Ella Stella Luna Nova Aurora Rio Cruz Santiago Cristal Bianca Carmen Dolores Luz Paz Sol
Otto Kurt Heinz Hans Wolfgang Ulrich Vincent Irene Lee Kim Lou Roman Norman Germaine Frances Ernest
""".split())

# A shipped list of common given names (EN, DE, FR, NL, IT, ES and some
# frequent names from elsewhere), written for this project; not derived from
# the evaluation generator.
_FIRST_NAMES = frozenset("""
Aaron Abby Abigail Ada Adam Adrian Adriana Agnes Aidan Aiden Alan Albert Alberto Alejandro Alex Alexa
Alexander Alexandra Alexis Alfie Alfred Ali Alice Alicia Alison Allan Allison Alyssa Amanda Amelia Amy
Ana Andrea Andreas Andrew Andy Angela Angelica Angelo Anita Ann Anna Anne Annette Annie Anthony Antonio
Archie Ariana Arianna Arthur Ashley Audrey Austin Ava Barbara Barry Beatrice Becky Ben Benjamin Bernard
Beth Bethany Betty Beverly Billy Blake Bobby Bonnie Brad Bradley Brandon Brenda Brendan Brett Brian
Bridget Brittany Bruce Bryan Caitlin Caleb Callum Calvin Cameron Camila Carl Carla Carlos Carly Carol
Caroline Carrie Casey Catherine Cathy Cecilia Charles Charlie Charlotte Chelsea Cheryl Chloe Chris
Christina Christine Christopher Cindy Claire Clara Claudia Clifford Clive Cody Colin Colleen Connor
Courtney Craig Cynthia Daisy Dale Dan Dana Daniel Daniela Danielle Danny Darren Dave David Debbie Deborah
Debra Denise Dennis Derek Diana Diane Dominic Donald Donna Doris Dorothy Douglas Dylan Eddie Edgar Edith
Edward Edwin Eileen Elaine Eleanor Elena Eli Elijah Elizabeth Ella Ellen Ellie Elliot Elliott Emily Emma
Eric Erica Erik Erin Ethan Eugene Evan Evelyn Felix Fiona Florence Freddie Frederick Freya Gabriel
Gabriella Gail Gary Gavin Gemma Geoffrey George Georgia Gerald Gina Gloria Gordon Graham Greg Gregory
Gwen Hailey Hannah Harold Harriet Harry Harvey Hayley Heather Heidi Helen Henry Holly Howard Hugh Hugo
Ian Imogen Isaac Isabel Isabella Isabelle Isla Ivan Jack Jackie Jackson Jacob Jacqueline Jade Jake James
Jamie Jan Jane Janet Janice Jared Jasmine Jason Jay Jayden Jean Jeff Jeffrey Jenna Jennifer Jenny Jeremy
Jerry Jesse Jessica Jill Jim Jimmy Joan Joanna Joanne Jodie Joe Joel Joey John Johnny Jon Jonathan Jordan
Jose Joseph Josephine Josh Joshua Joyce Juan Judith Judy Julia Julian Julie Justin Karen Kate Katherine
Kathleen Kathryn Kathy Katie Kayla Keith Kelly Ken Kenneth Kerry Kevin Kieran Kimberly Kirsty Kyle Laura
Lauren Lawrence Leah Leo Leon Leonard Leslie Lewis Liam Lillian Linda Lindsay Lisa Logan Lois Lorraine
Louis Louise Lucas Lucy Luke Lydia Lynn Madeline Madison Maggie Malcolm Marc Marcus Margaret Maria Marie
Marilyn Marion Martha Martin Mary Matt Matthew Maureen Megan Melanie Melissa Michael Michelle Mike Mildred
Millie Molly Monica Morgan Nancy Naomi Natalie Natasha Nathan Neil Nicholas Nicola Nicole Niamh Nigel
Noah Oliver Olivia Oscar Owen Paige Pamela Patricia Patrick Paul Paula Pauline Peggy Penny Peter Philip
Phillip Phoebe Poppy Rachel Ralph Randy Raymond Rebecca Regina Reginald Rhys Richard Rick Ricky Riley
Rita Robert Roberta Roger Ronald Rosie Ross Roy Russell Ruth Ryan Sally Samantha Samuel Sandra Sara Sarah
Scarlett Scott Sean Sebastian Seth Shane Shannon Sharon Shaun Shawn Sheila Shirley Sienna Simon Sofia
Sophia Sophie Stacey Stanley Stephanie Stephen Steve Steven Stuart Susan Suzanne Sylvia Tamara Tammy Tanya
Tara Teresa Terry Theo Theodore Theresa Thomas Tiffany Timothy Tina Toby Todd Tommy Tony Tracey Tracy
Travis Trevor Tyler Valerie Vanessa Vera Veronica Vicky Victor Victoria Vincent Virginia Walter Wayne
Wendy William Willie Zachary Zara Zoe
Agnieszka Anja Anke Annika Antje Astrid Bärbel Bernd Birgit Björn Brigitte Carsten Christa Christel
Christian Christiane Christoph Claus Dagmar Dieter Dirk Doris Elke Erika Erwin Florian Frank Franz
Friedrich Gabriele Gerhard Gisela Gudrun Günter Günther Hannelore Hans Harald Heike Heinrich Heinz Helga
Helmut Herbert Hildegard Holger Horst Ilse Ingrid Jan Jens Joachim Jochen Johanna Jörg Jürgen Karin Karl
Katharina Kerstin Klaus Kristin Lena Lukas Manfred Marco Marianne Marion Markus Martina Matthias Maximilian
Monika Niklas Nils Norbert Olaf Petra Rainer Ralf Regina Reinhard Renate Rolf Rudolf Sabine Sandra Sebastian
Silke Simone Stefan Stefanie Susanne Sven Thorsten Tobias Torsten Udo Ursula Ute Uwe Volker Walter
Werner Wilhelm Wolfgang Yvonne Jonas Leonie Finn Mats Emil Hanna Marlene Ole Tim Felix Jannik Laura
Alain Amélie Anaïs André Antoine Arnaud Aurélie Baptiste Benoît Bernadette Brigitte Camille Céline Chantal
Christophe Claude Clément Colette Corinne Damien Denis Didier Dominique Élodie Émile Emmanuel Étienne
Fabien Fabrice Florian Françoise François Frédéric Gaël Geneviève Georges Gérard Gilles Guillaume Hélène
Henri Hervé Isabelle Jacques Jeanne Jérémy Jérôme Josette Julien Laetitia Laurent Léa Léon Louise Luc
Lucie Manon Marcel Margaux Marguerite Mathieu Mathilde Maxime Michel Monique Nathalie Nicolas Noémie
Odette Olivier Pascal Pascale Patrice Philippe Pierre Quentin Raymond Renée Rémy Romain Sébastien
Serge Simone Solène Stéphane Stéphanie Suzanne Sylvie Thibault Thierry Valérie Véronique Vincent Virginie
Xavier Yves Yvette Zoé Chloé Inès Hugo Enzo Théo Nathan Mathis Clémence Océane Lucas Maël
Aafke Anouk Arjen Bart Bas Bram Cornelis Daan Dirk Eline Els Ewout Femke Floor Fleur Gerrit Gert Geert
Hendrik Henk Ilse Inge Jaap Jan Janneke Jasper Jeroen Joost Joris Kees Klaas Koen Lieke Lotte Luuk
Maarten Marieke Marijke Mark Martijn Merel Mirjam Niels Noor Pieter Pim Rik Rob Roel Ruud Sander Sanne
Sem Sietse Stijn Teun Thijs Tijn Tom Wessel Willem Wim Wouter Yvonne Fenna Roos Sven Jesse Milan Lars Levi
Adriano Alessandra Alessandro Alessio Alice Andrea Angela Angelo Anna Antonella Antonio Arianna Beatrice
Benedetta Bruno Carla Carlo Caterina Chiara Claudio Cristina Daniela Daniele Dario Davide Domenico
Elena Elisa Emanuele Enrico Enzo Fabio Federica Federico Filippo Francesca Francesco Franco Gabriele
Giacomo Gianluca Gianni Giorgia Giorgio Giovanna Giovanni Giulia Giulio Giuseppe Giuseppina Ilaria Laura
Leonardo Lorenzo Luca Lucia Luciano Luigi Marco Margherita Maria Mario Marta Martina Massimo Matteo
Mattia Maurizio Michele Nicola Paola Paolo Pietro Raffaele Riccardo Roberta Roberto Rosa Salvatore Sara
Serena Silvia Simona Simone Stefania Stefano Tommaso Valentina Valerio Vincenzo Vittoria Vittorio
Alba Alicia Álvaro Ángel Beatriz Carmen Cristina Diego Eduardo Elena Enrique Fernando Francisco Gonzalo
Guillermo Ignacio Javier Jesús Jorge José Josefa Juan Lucía Luis Manuel Marta Miguel Nuria Pablo Pilar
Rafael Ramón Raúl Rocío Rodrigo Sergio Teresa Vicente
Aarav Aditya Amit Ananya Anil Arjun Deepak Divya Ganesh Kavya Krishna Lakshmi Manoj Meera Neha Nikhil
Pooja Priya Rahul Raj Rajesh Ravi Rohan Sanjay Shreya Sunil Vikram Vijay Aisha Ahmed Ali Amir Fatima
Hassan Hussein Ibrahim Khalid Layla Mohammed Muhammad Mustafa Omar Yusuf Zainab Zeynep Emre Mehmet Elif
Wei Li Ming Jing Xin Hui Yan Chen Hiroshi Yuki Kenji Sakura Haruto Yuto Ji-woo Min-jun Seo-yeon
Olga Irina Natalia Svetlana Tatiana Dmitri Sergei Andrei Alexei Ivan Pavel Piotr Katarzyna Magdalena
Tomasz Krzysztof Marek Ewa Jakub Zofia Lars Erik Ingrid Sigrid Astrid Nils Freja Mette Søren Kasper
Abbie Adele Aileen Alana Albertine Alec Alfonso Alma Alvin Amara Amber Andre Andrea Angus Anya Arlene
Arnold Ashton Aubrey Audra Barney Basil Beatrix Belinda Benedict Bernice Bert Bertha Blanche Boris Brandi
Brenna Brent Bridie Bronwyn Bryony Byron Candice Cara Carmel Carole Carolyn Cassandra Cecil Cedric Celia
Chad Chandler Charity Charmaine Chester Clarence Claudette Clayton Clement Clifton Clint Clyde Connie
Conrad Cora Corey Cormac Cyril Daphne Darcy Darius Darla Darlene Declan Deirdre Delia Della Delores Demi
Desmond Dexter Dominique Dora Doreen Dorian Duncan Dwayne Earl Edna Effie Eliza Ellis Elsie Elton Elvira
Emilia Enid Erica Ernest Esme Esther Ethel Eunice Evangeline Everett Fay Felicity Fergus Fern Flora
Forrest Francine Francis Frederica Gareth Garrett Gaynor Georgina Gertrude Gideon Gilbert Giles Ginny
Gladys Glenda Glenn Greta Gus Gwendolyn Hal Hamish Harley Harriet Harrison Hattie Hector Herman Hilary
Hilda Homer Horace Hubert Ida Ingrid Irma Isaiah Isobel Jacqui Jasper Jeanette Jeannie Jed Jem Jemima
Jenna Jocelyn Jodi Johanna Jolene Josie Judd Juliana Juliet Juliette June Justine Kara Karl Kasey Katrina
Kay Kaylee Keeley Kelvin Kendra Kenny Kirk Kristen Kristina Kristy Lacey Lana Lance Lara Larry Leanne
Lee Leigh Lena Leona Leroy Lesley Lester Letitia Lex Lila Lindsey Lionel Lloyd Lola Lorna Lottie Lucille
Lucinda Luella Luther Lyle Mabel Mackenzie Madeleine Mae Malik Mandy Marcia Margot Marian Marianne Marjorie
Marla Marlon Marsha Marvin Matilda Maude Maurice Mavis Maxine Meghan Melinda Mervyn Micheal Miranda Mitchell
Moira Muriel Myra Myrtle Nadia Nadine Nell Nellie Nettie Nina Noel Noreen Norma Odessa Olive Ophelia Ora
Orla Oswald Pam Patsy Percy Perry Petra Philippa Piers Polly Priscilla Quinn Rachael Rebekah Reece Reid
Rex Rhoda Rhona Rhonda Rodney Roisin Ronan Ronnie Rosalind Rosamund Rosemary Rowan Roxanne Rufus Rupert
Sabrina Sadie Selina Seymour Sheldon Shelby Sheryl Sidney Silas Sonia Stacy Stella Stewart Sybil Tabitha
Tamsin Tania Tess Tessa Thelma Tilly Timmy Tobias Trisha Trudy Ursula Vernon Vivian Vivienne Wallace
Warren Wesley Whitney Wilbur Wilfred Winifred Winston Yolanda Yvette Zachariah Zelda
Achim Adelheid Albrecht Alfons Alois Annegret Annemarie Armin Arnd Benno Bernhard Berta Bettina Burkhard
Carola Claudia Cornelia Detlef Dietmar Dietrich Dorit Dorothea Eberhard Edeltraud Egon Elfriede Elisabeth
Elli Emma Erich Ernst Eugen Ewald Falk Ferdinand Frieda Friedhelm Fritz Gerda Gerlinde Gernot Gert Gottfried
Grete Gundula Hanspeter Hartmut Hedwig Heidemarie Heiner Heino Helene Henning Heribert Hermann Hilde Hubertus
Ilona Imke Irmgard Isolde Jannik Jutta Kai Karsten Kilian Klemens Konrad Kornelia Kurt Leni Liesel Lothar
Ludwig Luise Magdalena Margarete Margit Marianne Marlies Mechthild Meike Nicole Notburga Oskar Ottilie
Philipp Reinhold Rosemarie Rüdiger Sieglinde Siegfried Sigrid Sophie Theresia Traudl Ulf Ulla Ulrike
Valentin Veronika Viktor Waltraud Wilfried Wiebke Winfried
Adèle Adrien Agathe Albane Alexandrine Alphonse Anatole Annick Apolline Armand Arthur Aude Augustin Axelle
Bastien Béatrice Bénédicte Benjamin Bertrand Blanche Brigitte Capucine Caroline Cécile Charles Clarisse
Claudine Constance Corentin Cyrille Daniel Danielle Delphine Diane Dorothée Édouard Éliane Élise Éloïse
Émilie Eugénie Fanny Félix Florence Gabrielle Gaston Gauthier Germain Gilbert Ginette Grégoire Gustave
Hortense Hubert Ignace Jacqueline Joëlle Josiane Jules Juliette Laure Laurence Léonie Lionel Lorraine
Louis Lucien Lucille Madeleine Marcelle Marthe Martine Maurice Michèle Mireille Muriel Noël Noëlle Odile
Olivie Paulette Perrine Raphaël Régine René Roland Rosalie Sabine Sacha Serge Simone Sylvain Thérèse
Timothée Victoire Yannick
Aad Anneke Annemieke Berend Bram Carlijn Casper Chantal Coen Dieuwke Diederik Evert Fenne Frits Gijs Guus
Hanneke Harm Ids Ineke Jelle Jildou Joep Jorien Jurre Karel Kasper Lieve Linda Maartje Marloes Meindert
Mick Nynke Pien Rens Rutger Sjoerd Sofie Tess Thijmen Tineke Truus Valentijn Vera Wietske Wilma Wout
Agostino Alberico Alda Alfredo Ambra Amedeo Anselmo Antonietta Arturo Bartolomeo Bettino Bianca Carolina
Cesare Clelia Corrado Costanza Dante Donatella Edoardo Elio Emilio Ennio Ermanno Ettore Fabrizio Fausto
Ferdinando Fiorenzo Flavio Fulvio Gaetano Gemma Gennaro Gianfranco Gianmarco Gilberto Gino Giosuè Girolamo
Graziella Guido Igor Ilario Imelda Ivo Lazzaro Lino Livia Loredana Lucrezia Ludovica Manlio Marcantonio
Marcello Marina Maurilio Milena Mirella Nadia Natalia Nicoletta Noemi Oreste Orlando Ornella Ottavio
Pamela Patrizia Piero Pierangelo Pierluigi Priscilla Renato Rinaldo Rocco Romano Rosalia Rosario Sabrina
Sandro Santo Sergio Severino Teodoro Tiziana Tiziano Ugo Umberto Valeria Vanessa Veronica Virginia Vito
""".split())
