from flask import Blueprint, flash, redirect, render_template, request, session, url_for

bp = Blueprint("auth", __name__, url_prefix="/auth")


def index():
    return render_template("index.html", user=session.get("user"))


@bp.route("/login", methods=("GET", "POST"))
def login():
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        if not username:
            flash("Username is required.")
            return render_template("auth/login.html"), 400
        session.clear()
        session["user"] = username
        flash(f"Logged in as {username}.")
        return redirect(url_for("index"))
    return render_template("auth/login.html")


@bp.post("/logout")
def logout():
    session.clear()
    flash("Logged out.")
    return redirect(url_for("index"))
