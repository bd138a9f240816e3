from flask import Flask, jsonify, request

app = Flask(__name__)


@app.route("/")
def hello():
    return "Hello from Flask"


@app.route("/json", methods=["POST"])
def echo_json():
    return jsonify(received=request.get_json(), args=request.args.to_dict())


@app.route("/form", methods=["POST"])
def form():
    f = request.files.get("upload")
    return jsonify(field=request.form.get("field"), filename=f.filename if f else None,
                   size=len(f.read()) if f else 0)


@app.route("/stream")
def stream():
    return app.response_class((f"{i}\n" for i in range(5)), mimetype="text/plain")


@app.route("/fail")
def fail():
    raise ValueError("flask view failed")


def create_app(name="factory"):
    factory_app = Flask(name)

    @factory_app.route("/")
    def hello():
        return f"made by {name}"

    return factory_app
