"""A cookie session: log in, see who you are, log out."""

from typing import Annotated

from fastapi import APIRouter, Cookie, HTTPException, Response
from pydantic import BaseModel

router = APIRouter(prefix="/users", tags=["users"])


class Login(BaseModel):
    username: str
    password: str


@router.post("/login")
async def login(credentials: Login, response: Response) -> dict[str, str]:
    if credentials.password != f"{credentials.username}-password":
        raise HTTPException(status_code=401, detail="wrong username or password")
    response.set_cookie("user", credentials.username, httponly=True, samesite="lax")
    return {"logged_in": credentials.username}


@router.get("/me")
async def me(user: Annotated[str | None, Cookie()] = None) -> dict[str, str]:
    if user is None:
        raise HTTPException(status_code=401, detail="not logged in")
    return {"username": user}


@router.post("/logout")
async def logout(response: Response) -> dict[str, bool]:
    response.delete_cookie("user")
    return {"logged_out": True}
