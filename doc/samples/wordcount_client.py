"""Call the plugin guide's wordcount model through deepaas_like.client."""

from pathlib import Path

from deepaas_like.client import ArgumentsError, Client

with Client("http://127.0.0.1:5000") as client:
    print(client.metadata("wordcount")["description"])
    print(client.predict("wordcount", text="the cat and the hat"))
    Path("quote.txt").write_text("to be or not to be\n")
    print(client.predict("wordcount", document=Path("quote.txt"), top=2)["predictions"])
    try:
        client.predict("wordcount", text="hello", top=0)
    except ArgumentsError as error:
        print(error.fields)
    training = client.train("wordcount", epochs=3)
    done = training.wait(progress=True)  # a bar on a terminal, JSON lines otherwise (stderr)
    print(done["status"], done["metrics"], done["result"]["output"])
